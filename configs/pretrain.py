"""VITRA pretraining on VITRA-1M (+ optional Open X-Embodiment data), the release's recipe.

    python -m vitra_jax.train --workdir gs://bucket/vitra_pretrain \
        --config=configs/pretrain.py:frames=/data/vitra1m_frames \
        --config.init.paligemma=/ckpt/paligemma2-3b-mix-224 \
        --config.data.tokenizer=/ckpt/paligemma2-3b-mix-224/tokenizer.model
    # with OXE robot data mixed in: octo's magic soup, each at DIR/<name> (a frame store from
    # python -m vitra_jax.data.convert, or a TFDS folder converted on first use), or only some of them:
    #   --config=configs/pretrain.py:frames=/data/vitra1m_frames,oxe=/data/oxe_frames
    #   --config=configs/pretrain.py:frames=/data/vitra1m_frames,oxe=/data/oxe_frames,oxe_names=bridge_dataset+fractal20220817_data
    # and --config.data.normalize_by=embodiment to normalize each robot by its own statistics (docs/data.md)
    # and --config.val_by_component=True to log each dataset's validation loss (val_loss/<name>)

Recipe (vitra_official.md §4): global batch 512; AdamW (0.9, 0.999), weight decay 0.1 on matrices and the
cognition token; gradient clip 1.0; lr 1e-5 for the whole PaliGemma-2 except SigLIP (Gemma-2, word embeddings,
multimodal projector), held at 0 for the first 5000 steps, then constant; lr 1e-4 for the DiT, FoV encoder and
cognition token; SigLIP frozen; 8 noise draws per VLM pass; bf16 VLM compute, fp32 DiT with the release's
q/k norm (timm 0.9.10); init from
paligemma2-3b-mix-224, cognition token from embedding row 10; data: the VITRA-1M `magic_mix` with
trajectory-aware augmentation.
Hardware: 8×H100 80GB (one host; `mesh.fsdp` = devices per host), or a TPU v5p-16 / v4-32 slice
(`--config.mesh.fsdp=-1 --config.mesh.data=1`). On 80 GB GPUs, `--config.grad_accum=2
--config.model.remat_policy=dots_with_no_batch_dims_saveable` takes the same objective with 0.5 % instead of
31 % recomputation (docs/training.md). Time: the paper reports about two days on
8×H100 for 1–2 epochs (100k steps × 512 ≈ 51M samples ≈ 1.9 epochs of the mix). Expected loss: ~1.0 at
start, falling below ~0.3 (the release does not publish a curve).
"""

from ml_collections import config_dict

from configs.base import base_config, recipe_args
from vitra_jax.data import oxe
from vitra_jax.data.config import component, data_config, vitra1m_components


def get_config(arg: str | None = None):
    args = recipe_args(arg, ("frames", "oxe", "oxe_names"),
                       "configs/pretrain.py takes 'frames=DIR[,oxe=DIR[,oxe_names=NAME+NAME...]]'")
    c = base_config()
    c.num_steps = 100_000
    c.model.variant = "3b"
    c.model.qk_norm = "timm_0_9_10"    # the release's DiT q/k norm, so checkpoints stay official-compatible
    c.mesh.update(data=-1, fsdp=8)     # FSDP within an 8-GPU host, data-parallel across hosts
    # required: the paligemma2-3b-mix-224 folder (or big_vision .npz); '' trains from random weights
    c.init.paligemma = config_dict.placeholder(str)
    frames = args.get("frames")
    components = vitra1m_components(frames) if frames else []
    if "oxe" in args:
        names = args["oxe_names"].split("+") if "oxe_names" in args else list(oxe.MAGIC_SOUP)
        for name in names:
            oxe.get(name)  # an unknown name fails here, listing the registry
        components += [component(name, f"{args['oxe']}/{name}", oxe.MAGIC_SOUP.get(name, 1.0), kind="oxe")
                       for name in names]
    elif "oxe_names" in args:
        raise ValueError("configs/pretrain.py: oxe_names needs oxe=DIR")
    c.data = data_config(data_dir=frames, components=components, build_demo=False, tokenizer=None,
                         augment=True, num_workers=16)
    c.lock()
    return c
