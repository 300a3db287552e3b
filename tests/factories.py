"""Builders of tiny random models and inputs shared by the model, weights, parity and deploy tests."""

from __future__ import annotations

import pathlib

import numpy as np

from vitra_jax.models.paligemma import PaliGemmaConfig, paligemma_config


def tiny_config() -> PaliGemmaConfig:
    return paligemma_config("tiny")


def hf_config(cfg: PaliGemmaConfig, image_token_index: int | None = None):
    """transformers PaliGemmaConfig equal to ours; the image token is the last vocab row by default."""
    from transformers import Gemma2Config, PaliGemmaConfig as HFConfig, SiglipVisionConfig

    t, v = cfg.llm, cfg.vision
    tok = t.vocab_size - 1 if image_token_index is None else image_token_index
    rows = max(t.vocab_size, tok + 1) if image_token_index is None else -(-(t.vocab_size + 2) // 64) * 64
    vis = SiglipVisionConfig(hidden_size=v.width, intermediate_size=v.mlp_dim, num_hidden_layers=v.depth,
                             num_attention_heads=v.num_heads, image_size=v.image_size, patch_size=v.patch_size,
                             vision_use_head=False, hidden_act="gelu_pytorch_tanh")
    txt = Gemma2Config(vocab_size=rows, hidden_size=t.width, intermediate_size=t.mlp_dim,
                       num_hidden_layers=t.depth, num_attention_heads=t.num_heads,
                       num_key_value_heads=t.num_kv_heads, head_dim=t.head_dim, max_position_embeddings=512,
                       sliding_window=t.sliding_window, query_pre_attn_scalar=t.query_pre_attn_scalar)
    return HFConfig(vision_config=vis, text_config=txt, image_token_index=tok, vocab_size=rows,
                    projection_dim=t.width, hidden_size=t.width)


def tiny_hf_model(cfg: PaliGemmaConfig | None = None, seed: int = 0, image_token_index: int | None = None):
    """Random fp32 HF PaliGemma in eval mode; every weight (norms too) drawn at random."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    cfg = cfg or tiny_config()
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(hf_config(cfg, image_token_index)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def save_tiny_hf(path: pathlib.Path, seed: int = 0, image_token_index: int | None = None) -> pathlib.Path:
    tiny_hf_model(seed=seed, image_token_index=image_token_index).save_pretrained(str(path))
    return path


def tiny_inputs(cfg: PaliGemmaConfig, batch: int = 2, length: int = 12, seed: int = 0):
    """images in [-1, 1], tokens avoiding the last (image) id, right-padded mask (row 1 shorter)."""
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    images = rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32)
    tokens = rng.integers(1, cfg.llm.vocab_size - 1, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), bool)
    mask[1:, length - 3:] = False
    tokens[~mask] = 0
    return images, tokens, mask


def random_policy_params(shapes, rng: np.random.Generator):
    """Params of the policy param tree `shapes` (e.g. `jax.eval_shape` of `VitraPolicy.init`), every weight drawn
    from `rng` (the zero-initialised AdaLN and output layers too): N(0, 0.2²) in the VLM, N(0, 0.05²) elsewhere."""
    from vitra_jax.weights import names

    return names.unflatten({k: (rng.normal(size=v.shape) * (0.2 if k.startswith("vlm/") else 0.05))
                            .astype(np.float32) for k, v in names.flatten(shapes).items()})


def random_statistics(rng: np.random.Generator, dim: int = 102):
    """`DatasetStatistics` of `dim`-wide actions and states with means and stds drawn from `rng` (quantiles 0)."""
    from vitra_jax.data.statistics import DatasetStatistics

    return DatasetStatistics(action_mean=rng.normal(size=dim) * 0.1, action_std=rng.uniform(0.05, 1, dim),
                             action_q01=np.zeros(dim), action_q99=np.zeros(dim),
                             state_mean=rng.normal(size=dim) * 0.3, state_std=rng.uniform(0.05, 1, dim),
                             state_q01=np.zeros(dim), state_q99=np.zeros(dim), num_frames=100, num_episodes=3)
