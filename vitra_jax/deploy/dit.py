"""The causal DiT action head in torch, with the release's module names and padded 192/212-d widths.

Submodules are named as in the release (`blocks.{i}.attn.qkv`, `z_embedder.uncondition`, ...) so the
state dict under `act_model.net.` is the official one. Inputs and outputs are the padded widths: noisy
actions and masks (B, N, action_pad), state and mask (B, state_pad); only the first 102 dims are real and
the rest are zero in value and mask. Numerics follow `vitra_jax.models.dit` (AdaLN-Zero, causal attention
over `[z, s, a_1 … a_N]`, tanh-GELU MLP, q/k norm 'rms' or 'timm_0_9_10').
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        if self.kind == "rms":
            ms = xf.pow(2).mean(-1, keepdim=True)
        else:
            ms = xf.var(-1, keepdim=True, unbiased=True)
        return (xf * torch.rsqrt(ms + self.eps) * self.weight).to(x.dtype)


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
        q, k = self.q_norm(qkv[0]), self.k_norm(qkv[1])
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


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, qk_norm: str):
        super().__init__()
        self.attn = Attention(width, heads, qk_norm)
        self.mlp = Mlp(width, mlp_ratio * width)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sa, ca, ga, sm, cm, gm = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + ga[:, None] * self.attn(_modulate(_norm(x), sa, ca))
        return x + gm[:, None] * self.mlp(_modulate(_norm(x), sm, cm))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(_norm(x), shift, scale))


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

    def forward(self, z: torch.Tensor, t: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, state: torch.Tensor,
                state_mask: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        a = self.x_embedder(torch.cat([x * mask, mask], dim=-1))
        s = self.state_embedder(torch.cat([state * state_mask, state_mask], dim=-1))
        z_emb = self.z_embedder(z, drop)
        h = torch.cat([z_emb[:, None], s[:, None], a], dim=1) + self.positional_embedding
        c = z_emb + self.t_embedder(t)
        for block in self.blocks:
            h = block(h, c)
        return self.final_layer(h, c)[:, 2:]
