"""SigLIP vision transformer (no pooling head) with big_vision parameter names.

Axis key: B batch, P patches, D width, N heads, H head dim, F MLP width, L depth.
Parameters live under `embedding`, `pos_embedding`, `Transformer/encoderblock/...` (stacked over L by
`nn.scan`, as in big_vision checkpoints) and `Transformer/encoder_norm`. The projector into the text width
(`head`, a Dense to `num_classes`) is added only when `num_classes` is set, as PaliGemma does.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax

from vitra_jax.sharding import gather_weight, gathered_promote_dtype, shard_activation, sharded_dot_general


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
    """Size of a SigLIP ViT; defaults are So400m/14 at 224 px."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    norm_eps: float = 1e-6

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def remat_policy(name: str):
    """Maps a config string to a `jax.checkpoint_policies` member ('none' disables remat)."""
    if not hasattr(jax.checkpoint_policies, name):
        raise ValueError(f"unknown remat policy {name!r}; use 'none' or a jax.checkpoint_policies name")
    return getattr(jax.checkpoint_policies, name)


def scan_layers(block: type[nn.Module], depth: int, remat: str, in_axes: tuple) -> type[nn.Module]:
    """Stacks `block` over a leading depth axis with `nn.scan`, optionally rematerialised."""
    if remat != "none":
        block = nn.remat(block, policy=remat_policy(remat), prevent_cse=False)
    return nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=in_axes, length=depth)


class MlpBlock(nn.Module):
    mlp_dim: int
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        x = nn.Dense(self.mlp_dim, dtype=self.dtype, dot_general=sharded_dot_general, name="Dense_0")(x)
        x = nn.gelu(x, approximate=True)
        return nn.Dense(d, dtype=self.dtype, dot_general=sharded_dot_general, name="Dense_1")(x)


class EncoderBlock(nn.Module):
    """Pre-LN transformer block; called by nn.scan as (carry, _) -> (carry, None)."""

    cfg: SiglipConfig
    dtype: str

    @nn.compact
    def __call__(self, x: jax.Array, _=None):
        cfg = self.cfg
        y = nn.LayerNorm(epsilon=cfg.norm_eps, name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=cfg.num_heads, dtype=self.dtype, qkv_dot_general=sharded_dot_general,
            out_dot_general=sharded_dot_general, name="MultiHeadDotProductAttention_0")(y, y)
        x = x + y
        y = nn.LayerNorm(epsilon=cfg.norm_eps, name="LayerNorm_1")(x)
        x = x + MlpBlock(cfg.mlp_dim, self.dtype, name="MlpBlock_0")(y)
        return x, None


class Encoder(nn.Module):
    cfg: SiglipConfig
    dtype: str
    remat: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        blocks = scan_layers(EncoderBlock, self.cfg.depth, self.remat, in_axes=(nn.broadcast,))
        x, _ = blocks(self.cfg, self.dtype, name="encoderblock")(x, None)
        return nn.LayerNorm(epsilon=self.cfg.norm_eps, name="encoder_norm")(x)


class SiglipEncoder(nn.Module):
    """Images (B, H, W, 3) in [-1, 1] -> patch features (B, P, D), or (B, P, num_classes) via `head`."""

    cfg: SiglipConfig
    num_classes: int | None = None
    dtype: str = "float32"
    remat: str = "none"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        cfg = self.cfg
        if images.shape[1:3] != (cfg.image_size, cfg.image_size):
            raise ValueError(f"images are {images.shape[1:3]}, config expects {cfg.image_size}x{cfg.image_size}")
        p = cfg.patch_size
        # Patch embedding and positional embedding stay in fp32, as big_vision does.
        x = nn.Conv(cfg.width, (p, p), strides=(p, p), padding="VALID", promote_dtype=gathered_promote_dtype,
                    name="embedding")(images)
        x = shard_activation(x.reshape(x.shape[0], -1, cfg.width))
        pos = self.param("pos_embedding", nn.initializers.normal(1 / cfg.width**0.5),
                         (1, cfg.num_patches, cfg.width))
        x = (x + gather_weight(pos, pos.dtype)).astype(self.dtype)
        x = Encoder(cfg, self.dtype, self.remat, name="Transformer")(x)
        if self.num_classes:
            x = nn.Dense(self.num_classes, dtype=self.dtype, dot_general=sharded_dot_general, name="head")(x)
        return x
