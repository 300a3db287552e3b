"""Parts every training recipe shares: the model, optimizer, mesh, checkpoint and logging sections.

Recipes call `base_config()` and change what differs; every field can be overridden on the command line
(`--config.optim.action_lr=3e-5`). Fields set to a placeholder are required: the trainer refuses to start
until they are given.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def recipe_args(arg: str | None, keys: tuple[str, ...], usage: str) -> dict[str, str]:
    """`key=value,...` after `file.py:` on the command line; any key outside `keys` or an empty value fails
    with `usage`."""
    out = {}
    for part in filter(None, (arg or "").split(",")):
        key, _, value = part.partition("=")
        if key not in keys or not value:
            raise ValueError(f"{usage}, got {arg!r}")
        out[key] = value
    return out


def model_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "variant": "3b",               # 'tiny' (tests) or '3b' (PaliGemma-2 3B-224 + DiT-B)
        "image_size": 0,               # 0: the variant's own size
        "max_text_len": 0,             # 0: the variant's own length
        "dtype": "bfloat16",           # VLM compute dtype (params stay fp32); the DiT always computes in fp32
        "remat_policy": "nothing_saveable",  # VLM layers: 'none' or a jax.checkpoint_policies name
        "dit_remat": False,
        "repeats": 8,                  # noise draws per VLM pass (8 pretraining, 2 robot fine-tuning)
        "loss_type": "human",          # component weights: 'human' (all 1) or 'robot' (wrist 1.6, fingers 0.4)
        "freeze_vision": True,         # SigLIP frozen, as the release
        "qk_norm": "rms",              # DiT q/k norm: 'timm_0_9_10' for official checkpoints (models/dit.py)
    })


def optim_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "backbone_lr": 1e-5,           # PaliGemma: Gemma-2, word embeddings, multimodal projector
        "action_lr": 1e-4,             # DiT head, FoV encoder, cognition token
        "backbone_freeze_steps": 5000,  # backbone learning rate held at 0 for these steps
        "schedule": "constant",        # constant | warmup_constant | cosine | warmup_cosine
        "warmup_steps": 0,
        "decay_steps": 0,              # cosine length (default: num_steps)
        "end_lr_ratio": 0.0,
        "weight_decay": 0.1,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "clip_norm": 1.0,
        "freeze_vision": config_dict.FieldReference(True),
        "ema_decay": 0.0,              # > 0 keeps an exponential moving average of the params
    })


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.batch_size = 512                 # global, over all processes
    c.grad_accum = 1                   # micro-batches per optimizer step
    c.num_steps = config_dict.placeholder(int)
    c.model = model_config()
    c.optim = optim_config()
    c.optim.freeze_vision = c.model.get_ref("freeze_vision")
    c.init = ml_collections.ConfigDict({
        "paligemma": "",               # HF folder (config.json + safetensors) or big_vision .npz of PaliGemma-2
        "checkpoint": "",              # a vitra_jax workdir or checkpoint: params only (fine-tuning)
        "cognition_from_embedding": True,  # cognition token := word embedding row 10, as the release
    })
    # Devices as a ('data', 'fsdp') mesh (-1: the rest); large parameters and their optimizer state are split
    # over `shard_axes` (('fsdp',): replicated across 'data', like the release's hybrid sharding within a host;
    # ('data', 'fsdp'): over every device).
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "shard_axes": ("fsdp",), "min_shard_size": 2**14})
    c.checkpoint = ml_collections.ConfigDict({"every": 5000, "keep_last": 3, "keep_every": 50_000,
                                              "async_save": True})
    c.log_every = 50
    c.val_every = 5000                 # 0 disables validation
    c.val_batches = 8
    c.val_by_component = False         # also each validation component's loss alone (val_loss/<name>)
    return c
