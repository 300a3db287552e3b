"""The causal DiT action head in torch, with the release's module names and padded 192/212-d widths.

Submodules are named as in the release (`blocks.{i}.attn.qkv`, `z_embedder.uncondition`, ...) so the
state dict under `act_model.net.` is the official one. Inputs and outputs are the padded widths: noisy
actions and masks (B, N, action_pad), state and mask (B, state_pad); only the first 102 dims are real and
the rest are zero in value and mask. Numerics follow `vitra_jax.models.dit` (AdaLN-Zero, causal attention
over `[z, s, a_1 … a_N]`, tanh-GELU MLP, q/k norm 'rms' or 'timm_0_9_10').

A denoising loop calls the net many times with the same cognition feature and state, so the forward is split
in two: `condition` (the z and state tokens, once per loop) and `step` (one ε prediction from the conditioning
vector c = z_emb + t_emb); `forward` is the two in a row. Eager GPU inference pays per launched op, so the
step fuses what it can: all AdaLN rows from one SiLU of c, `addcmul` for modulation and gated residuals, q
and k normalized together.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

QK_NORMS = ("rms", "timm_0_9_10")


class QKNorm(nn.Module):
    """Per-head norm with a learned gain: 'rms' divides by sqrt(mean(x²) + eps), 'timm_0_9_10' by
    sqrt(unbiased var(x) + eps) as timm 0.9.10's RmsNorm (the release's pin) does."""

    def __init__(self, dim: int, kind: str, eps: float = 1e-6):
        super().__init__()
        if kind not in QK_NORMS:
            raise ValueError(f"unknown qk_norm {kind!r}; choose one of {QK_NORMS}")
        self.kind, self.eps = kind, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """The norm without the gain, in fp32."""
        xf = x.float()
        if self.kind == "rms":
            ms = xf.pow(2).mean(-1, keepdim=True)
        else:
            ms = xf.var(-1, keepdim=True, unbiased=True)
        return xf * torch.rsqrt(ms + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normalize(x) * self.weight).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: str):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.q_norm = QKNorm(width // heads, qk_norm)
        self.k_norm = QKNorm(width // heads, qk_norm)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        qk = self.q_norm.normalize(qkv[:2])  # q and k normalized together (same kind and eps), then their gains
        q, k = (qk[0] * self.q_norm.weight).to(x.dtype), (qk[1] * self.k_norm.weight).to(x.dtype)
        out = F.scaled_dot_product_attention(q, k, qkv[2], is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale1: torch.Tensor) -> torch.Tensor:
    """x·scale1 + shift with scale1 = 1 + scale (`DiT.modulations` adds the 1); shift and scale1 (B, 1, W)."""
    return torch.addcmul(shift, x, scale1)


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, qk_norm: str):
        super().__init__()
        self.attn = Attention(width, heads, qk_norm)
        self.mlp = Mlp(width, mlp_ratio * width)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """x (B, T, W); mod (B, 6, W): this block's rows of `DiT.modulations`."""
        sa, ca, ga, sm, cm, gm = mod[:, None].unbind(2)
        x = torch.addcmul(x, ga, self.attn(_modulate(_norm(x), sa, ca)))
        return torch.addcmul(x, gm, self.mlp(_modulate(_norm(x), sm, cm)))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        """mod (B, 2, W): shift and 1 + scale, the last rows of `DiT.modulations`."""
        shift, scale1 = mod[:, None].unbind(2)
        return self.linear(_modulate(_norm(x), shift, scale1))


class TimestepEmbedder(nn.Module):
    """Sinusoidal [cos(t·f), sin(t·f)] with geometric frequencies -> Linear, SiLU, Linear."""

    def __init__(self, width: int, freq_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Cognition feature -> width; rows flagged in `drop` use the learned `uncondition` vector instead."""

    def __init__(self, token_size: int, width: int):
        super().__init__()
        self.linear = nn.Linear(token_size, width)
        self.uncondition = nn.Parameter(torch.zeros(1, token_size))

    def forward(self, z: torch.Tensor, drop: torch.Tensor | None) -> torch.Tensor:
        if drop is not None:
            z = torch.where(drop[:, None], self.uncondition.to(z.dtype), z)
        return self.linear(z)


class Projector(nn.Module):
    """MLP over `[value·mask, mask]`: Linear, GELU, Linear (, GELU, Linear)."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers += [nn.GELU()] if i else []
            layers.append(nn.Linear(a, b))
        self.projector = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(x)


class DiT(nn.Module):
    """ε-predictor over padded inputs; returns (B, N, action_pad)."""

    def __init__(self, *, depth: int, width: int, heads: int, mlp_ratio: int, freq_dim: int, state_hidden: int,
                 token_size: int, chunk_len: int, action_pad: int, state_pad: int, qk_norm: str):
        super().__init__()
        self.x_embedder = Projector([2 * action_pad, width, width])
        self.state_embedder = Projector([2 * state_pad, state_hidden, width, width])
        self.z_embedder = LabelEmbedder(token_size, width)
        self.t_embedder = TimestepEmbedder(width, freq_dim)
        self.positional_embedding = nn.Parameter(torch.zeros(chunk_len + 2, width))
        self.blocks = nn.ModuleList([DiTBlock(width, heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.final_layer = FinalLayer(width, action_pad)
        unit = torch.zeros(6 * depth + 2, 1)  # 1 at the scale rows (shift, scale, gate, shift, scale, gate per block)
        unit[[*range(1, 6 * depth, 3), 6 * depth + 1]] = 1.0
        self.register_buffer("unit_scales", unit, persistent=False)

    def forward(self, z: torch.Tensor, t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, state: torch.Tensor,
                state_mask: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """ε for noisy actions x (B, N, action_pad) at timesteps t (B,)."""
        prefix, z_emb = self.condition(z, state, state_mask, drop)
        return self.step(prefix, z_emb + self.t_embedder(t), x, mask)

    def condition(self, z: torch.Tensor, state: torch.Tensor, state_mask: torch.Tensor,
                  drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The timestep-free part: the [z, s] tokens with their positions (B, 2, W) and z_emb (B, W)."""
        s = self.state_embedder(torch.cat([state * state_mask, state_mask], dim=-1))
        z_emb = self.z_embedder(z, drop)
        return torch.stack([z_emb, s], dim=1) + self.positional_embedding[:2], z_emb

    def modulations(self, c: torch.Tensor) -> torch.Tensor:
        """AdaLN rows of every block, then the final layer's, for c (B, W): (B, 6·depth + 2, W), with the 1 of
        x·(1 + scale) already added to the scale rows (one addition here instead of one per modulation)."""
        silu_c = F.silu(c)
        rows = [blk.adaLN_modulation[1](silu_c) for blk in self.blocks]
        rows.append(self.final_layer.adaLN_modulation[1](silu_c))
        return torch.cat(rows, dim=-1).unflatten(-1, (-1, c.shape[-1])) + self.unit_scales

    def step(self, prefix: torch.Tensor, c: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ε (B, N, action_pad) from `condition`'s prefix, c = z_emb + t_emb (B, W) and x, mask (B, N, pad)."""
        a = self.x_embedder(torch.cat([x * mask, mask], dim=-1)) + self.positional_embedding[2:]
        h = torch.cat([prefix, a], dim=1)
        mods = self.modulations(c)
        for i, block in enumerate(self.blocks):
            h = block(h, mods[:, 6 * i:6 * i + 6])
        return self.final_layer(h[:, 2:], mods[:, -2:])
