"""Causal DiT action expert of VITRA (§2.4): predicts the diffusion noise of a 16-step action chunk.

Tokens `[z (cognition), s (hand state), a_1 … a_N]` plus learned positions go through AdaLN-Zero blocks
conditioned on c = z_emb + t_emb; attention is causal (token k sees tokens ≤ k) with normed queries and keys.
Embedding the cognition feature substitutes a learned `uncondition` vector where `drop` is set
(condition dropout in training, the unconditional branch of classifier-free guidance in sampling).

Axis letters: B batch, T tokens (2 + N), N chunk steps, A action dims, S state dims, D width, H heads,
K head dim.

The q/k norm (`DiTConfig.qk_norm`, reference §9.1): the release builds it from timm's `RmsNorm` and pins
timm 0.9.10, whose `RmsNorm` divides x by sqrt(unbiased variance of x + 1e-6) (the variance has the mean
removed, x itself does not); timm made it a true RMS norm only in 1.0.13. "timm_0_9_10" is that formula,
"rms" the true RMS norm x / sqrt(mean(x²) + 1e-6); they differ most when q and k have a non-zero mean over
the head dim. Deliberate difference: the default stays "rms", so runs trained before the option existed keep
their behaviour. Configs that load or produce official-compatible checkpoints must use "timm_0_9_10". Both
have one gain vector `scale` per norm, so checkpoints load under either choice.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitra_jax.sharding import sharded_dot_general


QK_NORMS = ("rms", "timm_0_9_10")


def _check_qk_norm(kind: str) -> None:
    if kind not in QK_NORMS:
        raise ValueError(f"unknown qk_norm {kind!r}; choose one of {', '.join(map(repr, QK_NORMS))}")


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """DiT-B by default, with the official 192-d action / 212-d state padding replaced by our 102-d."""

    depth: int = 12
    width: int = 768
    num_heads: int = 12
    mlp_ratio: int = 4
    action_dim: int = 102
    state_dim: int = 102
    token_size: int = 2304  # width of the cognition feature (the VLM width)
    chunk_len: int = 16
    state_hidden: int = 3072
    freq_dim: int = 256
    dtype: str = "float32"
    remat: bool = False
    qk_norm: str = "rms"  # "timm_0_9_10" for official checkpoints (module docstring)

    def __post_init__(self):
        _check_qk_norm(self.qk_norm)

    @property
    def num_tokens(self) -> int:
        return self.chunk_len + 2


# Kernel inits as the release: Xavier-uniform for the blocks, zeros for the AdaLN-Zero modulations and the
# output layer, N(0, 0.02) for the embedders of actions, state, condition and timestep; biases start at 0.
_INITS = {"xavier": nn.initializers.xavier_uniform(), "zero": nn.initializers.zeros,
          "embed": nn.initializers.normal(0.02)}


def _dense(features: int, name: str, dtype, init: str = "xavier") -> nn.Dense:
    return nn.Dense(features, kernel_init=_INITS[init], bias_init=nn.initializers.zeros, dtype=dtype,
                    dot_general=sharded_dot_general, name=name)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal features (B, dim) = [cos(t·f), sin(t·f)] with geometric frequencies."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class QKNorm(nn.Module):
    """Norm over the head dim with a learned gain (init 1): "rms" divides by sqrt(mean(x²) + eps),
    "timm_0_9_10" by sqrt(var(x, unbiased) + eps) (module docstring)."""

    kind: str = "rms"
    eps: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_qk_norm(self.kind)
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        xf = x.astype(jnp.float32)
        if self.kind == "rms":
            ms = jnp.mean(xf * xf, axis=-1, keepdims=True)
        else:
            ms = jnp.var(xf, axis=-1, keepdims=True, ddof=1)
        return (xf * jax.lax.rsqrt(ms + self.eps) * scale).astype(x.dtype)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale[:, None]) + shift[:, None]


def _layer_norm(x: jax.Array) -> jax.Array:
    """LayerNorm without affine parameters (AdaLN supplies the scale and shift)."""
    xf = x.astype(jnp.float32)
    mu = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.var(xf, axis=-1, keepdims=True)
    return ((xf - mu) * jax.lax.rsqrt(var + 1e-6)).astype(x.dtype)


class DiTBlock(nn.Module):
    """Causal self-attention + tanh-GELU MLP, both gated by AdaLN-Zero modulation of c."""

    cfg: DiTConfig

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> tuple[jax.Array, None]:
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        d, h = cfg.width, cfg.num_heads
        k = d // h
        mod = _dense(6 * d, "adaLN", dt, init="zero")(nn.silu(c))
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod, 6, axis=-1)

        y = _modulate(_layer_norm(x), shift_a, scale_a)
        qkv = _dense(3 * d, "qkv", dt)(y).reshape(*y.shape[:2], 3, h, k)
        q, kk, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, kk = QKNorm(cfg.qk_norm, name="q_norm")(q), QKNorm(cfg.qk_norm, name="k_norm")(kk)
        logits = jnp.einsum("BTHK,BSHK->BHTS", q, kk).astype(jnp.float32) / math.sqrt(k)
        n = x.shape[1]
        causal = jnp.tril(jnp.ones((n, n), bool))
        logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(dt)
        att = jnp.einsum("BHTS,BSHK->BTHK", probs, v).reshape(*y.shape[:2], d)
        x = x + gate_a[:, None] * _dense(d, "proj", dt)(att)

        y = _modulate(_layer_norm(x), shift_m, scale_m)
        y = _dense(cfg.mlp_ratio * d, "mlp_fc1", dt)(y)
        y = _dense(d, "mlp_fc2", dt)(nn.gelu(y, approximate=True))
        return x + gate_m[:, None] * y, None


class DiT(nn.Module):
    """ε-predictor: (z (B,token_size), t (B,), noisy x (B,N,A), action mask, state (B,S), state mask, drop (B,))."""

    cfg: DiTConfig

    @nn.compact
    def __call__(self, z: jax.Array, t: jax.Array, x: jax.Array, action_mask: jax.Array,
                 state: jax.Array, state_mask: jax.Array, drop: jax.Array | None = None) -> jax.Array:
        cfg = self.cfg
        dt = jnp.dtype(cfg.dtype)
        d = cfg.width
        if x.shape[1:] != (cfg.chunk_len, cfg.action_dim):
            raise ValueError(f"noisy actions must be (B, {cfg.chunk_len}, {cfg.action_dim}), got {x.shape}")
        if state.shape[1:] != (cfg.state_dim,) or z.shape[1:] != (cfg.token_size,):
            raise ValueError(f"state must be (B, {cfg.state_dim}) and z (B, {cfg.token_size}); "
                             f"got {state.shape} and {z.shape}")

        uncond = self.param("uncondition", nn.initializers.normal(0.02), (cfg.token_size,))
        if drop is not None:
            z = jnp.where(drop[:, None], uncond[None].astype(z.dtype), z)
        z_emb = _dense(d, "z_embedder", dt, "embed")(z.astype(dt))

        t_emb = timestep_embedding(t, cfg.freq_dim).astype(dt)
        t_emb = _dense(d, "t_embedder_fc1", dt, "embed")(t_emb)
        t_emb = _dense(d, "t_embedder_fc2", dt, "embed")(nn.silu(t_emb))

        m = action_mask.astype(dt)
        a = jnp.concatenate([x.astype(dt) * m, m], axis=-1)
        a = nn.gelu(_dense(d, "x_embedder_fc1", dt, "embed")(a), approximate=False)
        a = _dense(d, "x_embedder_fc2", dt, "embed")(a)

        sm = state_mask.astype(dt)
        s = jnp.concatenate([state.astype(dt) * sm, sm], axis=-1)
        s = nn.gelu(_dense(cfg.state_hidden, "state_embedder_fc1", dt, "embed")(s), approximate=False)
        s = nn.gelu(_dense(d, "state_embedder_fc2", dt, "embed")(s), approximate=False)
        s = _dense(d, "state_embedder_fc3", dt, "embed")(s)

        pos = self.param("pos_embedding", nn.initializers.normal(d**-0.5), (cfg.num_tokens, d))
        tokens = jnp.concatenate([z_emb[:, None], s[:, None], a], axis=1) + pos.astype(dt)[None]
        c = z_emb + t_emb

        block = DiTBlock
        if cfg.remat:
            block = nn.remat(block, prevent_cse=False)
        blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=nn.broadcast, length=cfg.depth)(cfg, name="blocks")
        tokens, _ = blocks(tokens, c)

        shift, scale = jnp.split(_dense(2 * d, "final_adaLN", dt, init="zero")(nn.silu(c)), 2, axis=-1)
        out = _dense(cfg.action_dim, "final_linear", dt, init="zero")(_modulate(_layer_norm(tokens), shift, scale))
        return out[:, 2:].astype(jnp.float32)
