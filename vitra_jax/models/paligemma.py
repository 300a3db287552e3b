"""PaliGemma-2: SigLIP image tokens projected into Gemma-2, prefix-LM attention, tied-embedding logits.

Sequence layout: [image tokens (N) | text tokens (L) | extra embeddings (E)]. Parameters are the big_vision
tree `{"img": ..., "llm": ...}`. Configs by name: `paligemma_config("tiny" | "3b-224" | "3b-448" | "3b-896")`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitra_jax.models.gemma2 import Gemma2, Gemma2Config, attention_masks
from vitra_jax.models.siglip import SiglipConfig, SiglipEncoder
from vitra_jax.sharding import shard_activation


@dataclasses.dataclass(frozen=True)
class PaliGemmaConfig:
    """Whole-model config. `dtype` is the compute dtype (params stay fp32); `remat_policy` is 'none' or a
    `jax.checkpoint_policies` name. `image_token_index` is HF checkpoint metadata only: the id of the
    `<image>` placeholder (None: appended after the vocabulary, as in the PaliGemma-2 release)."""

    vision: SiglipConfig = dataclasses.field(default_factory=SiglipConfig)
    llm: Gemma2Config = dataclasses.field(default_factory=Gemma2Config)
    dtype: str = "float32"
    remat_policy: str = "none"
    image_token_index: int | None = None

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches


def paligemma_config(name: str) -> PaliGemmaConfig:
    """Named configs: 'tiny' (tests, ~0.2M params) and the PaliGemma-2 3B sizes."""
    if name == "tiny":
        return PaliGemmaConfig(
            vision=SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=2, patch_size=8, image_size=32),
            llm=Gemma2Config(width=48, depth=2, mlp_dim=96, num_heads=2, num_kv_heads=1, head_dim=24,
                             vocab_size=512, query_pre_attn_scalar=24, sliding_window=8))
    sizes = {"3b-224": 224, "3b-448": 448, "3b-896": 896}
    if name not in sizes:
        raise ValueError(f"unknown PaliGemma config {name!r}; choose from {['tiny', *sizes]}")
    return PaliGemmaConfig(vision=SiglipConfig(image_size=sizes[name]))


class PaliGemmaOutput(NamedTuple):
    hidden: jax.Array  # (B, S, W) after the final norm
    logits: jax.Array | None  # (B, S, V) soft-capped, or None


def prefix_lm_masks(valid: jax.Array, mask_ar: jax.Array, extra: jax.Array, positions: jax.Array,
                    window: int | None) -> tuple[jax.Array, jax.Array]:
    """(full, sliding) boolean masks (B, S, S) with big_vision prefix-LM semantics.

    Query i sees key j when cumsum(mask_ar)[j] <= cumsum(mask_ar)[i] and j is valid. Extra positions see and
    are seen by every valid position. Pairs in one bidirectional block skip the sliding window (as HF does
    for the token_type_ids==0 prefix).
    """
    cum = jnp.cumsum(mask_ar, axis=-1)
    either_extra = extra[:, :, None] | extra[:, None, :]
    allowed = ((cum[:, None, :] <= cum[:, :, None]) | either_extra) & valid[:, None, :]
    same_block = (cum[:, None, :] == cum[:, :, None]) | either_extra
    return attention_masks(allowed, same_block, positions, window)


class PaliGemma(nn.Module):
    cfg: PaliGemmaConfig

    def setup(self):
        cfg = self.cfg
        self.img = SiglipEncoder(cfg.vision, num_classes=cfg.llm.width, dtype=cfg.dtype, remat=cfg.remat_policy)
        self.llm = Gemma2(cfg.llm, dtype=cfg.dtype, remat=cfg.remat_policy)

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        """Raw (unscaled) embedding rows (B, L, W)."""
        return self.llm.embed(tokens)

    def embed_image(self, images: jax.Array) -> jax.Array:
        """Image tokens (B, N_img, W) in the text width (not scaled by sqrt(W))."""
        return self.img(images)

    def __call__(self, images: jax.Array, tokens: jax.Array, input_mask: jax.Array,
                 mask_ar: jax.Array | None = None, extra_embeds: jax.Array | None = None,
                 return_logits: bool = True) -> PaliGemmaOutput:
        """images (B, H, W, 3) in [-1, 1]; tokens (B, L) int; input_mask (B, L) bool, right padded;
        mask_ar (B, L) int (0 prefix, 1 causal; None: all prefix); extra_embeds (B, E, W) appended."""
        b, n_txt = tokens.shape
        width = self.cfg.llm.width
        scale = jnp.asarray(width**0.5, jnp.float32)
        z_img = self.embed_image(images).astype(jnp.float32)
        z_txt = self.embed_tokens(tokens).astype(jnp.float32) * scale
        parts, n_img = [z_img, z_txt], z_img.shape[1]
        n_extra = 0
        if extra_embeds is not None:
            if extra_embeds.shape[0] != b or extra_embeds.shape[2] != width:
                raise ValueError(f"extra_embeds must be (B={b}, E, W={width}), got {extra_embeds.shape}")
            parts.append(extra_embeds.astype(jnp.float32) * scale)
            n_extra = extra_embeds.shape[1]
        x = shard_activation(jnp.concatenate(parts, axis=1))

        def pad(v, n_before, n_after, fill):
            return jnp.concatenate([jnp.full((b, n_before), fill, v.dtype), v,
                                    jnp.full((b, n_after), fill, v.dtype)], axis=1)

        valid = pad(input_mask.astype(bool), n_img, n_extra, True)
        ar = jnp.zeros((b, n_txt), jnp.int32) if mask_ar is None else mask_ar.astype(jnp.int32)
        ar = pad(ar, n_img, n_extra, 0)
        extra = jnp.concatenate([jnp.zeros((b, n_img + n_txt), bool), jnp.ones((b, n_extra), bool)], axis=1)
        positions = jnp.cumsum(valid, axis=-1) - 1
        masks = prefix_lm_masks(valid, ar, extra, positions, self.cfg.llm.sliding_window)
        hidden = self.llm(x, masks, positions)
        logits = self.llm.logits(hidden) if return_logits else None
        return PaliGemmaOutput(hidden=hidden, logits=logits)
