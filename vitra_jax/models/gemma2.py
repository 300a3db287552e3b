"""Gemma-2 decoder stack with big_vision parameter names (`embedder`, `layers/...`, `final_norm`).

Axis key: B batch, T query length, S key length, D width, N query heads, K kv heads, G = N/K query heads
per kv head, H head dim, F MLP width, V vocab.
The stack takes embeddings plus a boolean attention mask; building the mask (prefix-LM, sliding window)
is done by `attention_masks` below and by PaliGemma. Layers are scanned; even layers (0, 2, ...) use the
sliding-window mask and odd layers the full mask, the same split as HF `Gemma2Config.layer_types`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitra_jax.models.siglip import scan_layers
from vitra_jax.sharding import gather_weight, shard_activation

# Large negative fill used instead of -inf so fully masked rows (padding queries) stay finite.
_MASK_VALUE = -2.3819763e38


@dataclasses.dataclass(frozen=True)
class Gemma2Config:
    """Size of a Gemma-2 decoder; defaults are Gemma2-2B with the PaliGemma-2 vocabulary."""

    width: int = 2304
    depth: int = 26
    mlp_dim: int = 9216
    num_heads: int = 8
    num_kv_heads: int = 4
    head_dim: int = 256
    vocab_size: int = 257152
    query_pre_attn_scalar: int = 256
    attn_softcap: float | None = 50.0
    final_softcap: float | None = 30.0
    sliding_window: int | None = 4096
    rope_base: float = 10_000.0
    norm_eps: float = 1e-6


class RMSNorm(nn.Module):
    """RMSNorm with a (1 + scale) gain, computed in fp32."""

    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.zeros_init(), (x.shape[-1],))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * (1 + scale)).astype(x.dtype)


class Embedder(nn.Module):
    vocab_size: int
    width: int

    def setup(self):
        self.input_embedding = self.param("input_embedding", nn.initializers.normal(0.02),
                                          (self.vocab_size, self.width))

    def encode(self, tokens: jax.Array) -> jax.Array:
        """Raw (unscaled) embedding rows (B, L, D)."""
        # The table stays sharded over its vocabulary rows here (see vitra_jax/sharding.py).
        return shard_activation(jnp.take(self.input_embedding, tokens, axis=0))

    def decode(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("btd,vd->btv", x, gather_weight(self.input_embedding, x.dtype))


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
    """Rotary embedding on x (B, T, N, H) with split halves (HF `rotate_half` convention), in fp32."""
    half = x.shape[-1] // 2
    freq = base ** (-jnp.arange(half, dtype=jnp.float32) * 2 / x.shape[-1])
    angle = positions.astype(jnp.float32)[:, :, None, None] * freq
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention_masks(allowed: jax.Array, same_block: jax.Array, positions: jax.Array,
                    window: int | None) -> tuple[jax.Array, jax.Array]:
    """(full, sliding) masks (B, T, S) from a prefix-LM mask.

    `same_block[b, i, j]` marks pairs inside one bidirectional block; like HF, such pairs ignore the window,
    every other pair needs a position distance below `window`.
    """
    if window is None:
        return allowed, allowed
    dist = positions[:, :, None] - positions[:, None, :]
    return allowed, allowed & ((dist < window) | same_block)


class Weight(nn.Module):
    """A single einsum weight stored as `<name>/w`, the big_vision layout."""

    shape: tuple[int, ...]

    @nn.compact
    def __call__(self) -> jax.Array:
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=tuple(range(len(self.shape) - 2)))
        return self.param("w", init, self.shape)


class Attention(nn.Module):
    cfg: Gemma2Config
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, positions: jax.Array) -> jax.Array:
        cfg = self.cfg
        n, k, h, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.width
        wq = Weight((n, d, h), name="q_einsum")()
        wkv = Weight((2, k, d, h), name="kv_einsum")()
        wo = Weight((n, h, d), name="attn_vec_einsum")()
        q = shard_activation(jnp.einsum("btd,ndh->btnh", x, gather_weight(wq, self.dtype)))
        kk, v = jnp.einsum("bsd,ckdh->cbskh", x, gather_weight(wkv, self.dtype))
        kk, v = shard_activation(kk), shard_activation(v)
        q = apply_rope(q, positions, cfg.rope_base) * cfg.query_pre_attn_scalar**-0.5
        kk = apply_rope(kk, positions, cfg.rope_base)
        q = q.reshape(*q.shape[:2], k, n // k, h)
        logits = jnp.einsum("btkgh,bskh->bkgts", q, kk, preferred_element_type=jnp.float32)
        if cfg.attn_softcap:
            logits = jnp.tanh(logits / cfg.attn_softcap) * cfg.attn_softcap
        logits = jnp.where(mask[:, None, None], logits, _MASK_VALUE)
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bkgts,bskh->btkgh", probs, v).reshape(*x.shape[:2], n, h)
        return shard_activation(jnp.einsum("btnh,nhd->btd", out, gather_weight(wo, self.dtype)))


class FeedForward(nn.Module):
    mlp_dim: int
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
        w_gate = self.param("gating_einsum", init, (2, d, self.mlp_dim))
        w_out = self.param("linear", nn.initializers.lecun_normal(), (self.mlp_dim, d))
        gate, up = jnp.einsum("btd,cdf->cbtf", x, gather_weight(w_gate, self.dtype))
        gate, up = shard_activation(gate), shard_activation(up)
        y = jnp.einsum("btf,fd->btd", nn.gelu(gate, approximate=True) * up, gather_weight(w_out, self.dtype))
        return shard_activation(y)


class Block(nn.Module):
    """One Gemma-2 layer; scanned as (x, masks, positions, layer_index) -> (x, None)."""

    cfg: Gemma2Config
    dtype: str

    @nn.compact
    def __call__(self, x, masks, positions, layer_index):
        full, sliding = masks
        mask = jnp.where(layer_index % 2 == 0, sliding, full)
        eps = self.cfg.norm_eps
        y = RMSNorm(eps, name="pre_attention_norm")(x)
        y = Attention(self.cfg, self.dtype, name="attn")(y, mask, positions)
        x = x + RMSNorm(eps, name="post_attention_norm")(y)
        y = RMSNorm(eps, name="pre_ffw_norm")(x)
        y = FeedForward(self.cfg.mlp_dim, self.dtype, name="mlp")(y)
        x = x + RMSNorm(eps, name="post_ffw_norm")(y)
        return x, None


class Gemma2(nn.Module):
    """Embeddings (B, T, D) (already scaled) -> final-normed hidden states (B, T, D)."""

    cfg: Gemma2Config
    dtype: str = "float32"
    remat: str = "none"

    def setup(self):
        self.embedder = Embedder(self.cfg.vocab_size, self.cfg.width)
        blocks = scan_layers(Block, self.cfg.depth, self.remat,
                             in_axes=(nn.broadcast, nn.broadcast, 0))
        self.layers = blocks(self.cfg, self.dtype)
        self.final_norm = RMSNorm(self.cfg.norm_eps)

    def embed(self, tokens: jax.Array) -> jax.Array:
        return self.embedder.encode(tokens)

    def __call__(self, x: jax.Array, masks: tuple[jax.Array, jax.Array], positions: jax.Array) -> jax.Array:
        x = shard_activation(x.astype(self.dtype))
        x, _ = self.layers(x, masks, positions, jnp.arange(self.cfg.depth))
        return self.final_norm(x)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Tied-embedding logits in fp32, soft-capped when the config says so."""
        logits = self.embedder.decode(hidden).astype(jnp.float32)
        if self.cfg.final_softcap:
            logits = jnp.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits
