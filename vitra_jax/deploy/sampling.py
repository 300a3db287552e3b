"""Diffusion sampling for the deploy policy: the cosine schedule in numpy and the DDIM / DDPM loops in torch.

The schedule is the release's `squaredcos_cap_v2` over `num_train_steps` (ᾱ(t) = cos²((t/T + 0.008)/1.008 ·
π/2), β capped at 0.999). DDIM (η = 0) runs over IDDPM's "ddimN" respacing (timesteps 0, s, 2s, … for the
first stride s giving N steps) and feeds the network the original timesteps; DDPM is ancestral sampling over
all training steps with the fixed-small posterior variance. Written without jax: the deploy package must not
import it (tests check these formulas against `vitra_jax.models.diffusion`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the loops only do tensor arithmetic, so the server can use the schedule without torch
    import torch

EpsFn = Callable[["torch.Tensor", int], "torch.Tensor"]  # (x_t, timestep) -> ε prediction
# sampling options a bundle's config.json records and `DeployedPolicy` uses where an observation gives none
SAMPLING_DEFAULTS = {"num_samples": 1, "cfg_scale": 5.0, "num_ddim_steps": 10, "use_ddim": True}


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> np.ndarray:
    """β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), max_beta), float64 (T,)."""
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return np.array([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                     for i in range(num_steps)], dtype=np.float64)


def ddim_timesteps(num_train: int, num_sample: int) -> np.ndarray:
    """Ascending respaced timesteps: range(0, T, stride) for the first stride giving exactly N steps."""
    for stride in range(1, num_train + 1):
        steps = np.arange(0, num_train, stride)
        if len(steps) == num_sample:
            return steps
    raise ValueError(f"no stride of {num_train} training steps gives exactly {num_sample} DDIM steps")


def ddim_coefficients(num_train: int, num_sample: int) -> list[tuple[int, float, float, float, float]]:
    """Per DDIM step, from the noisiest: (t, sqrt ᾱ_t, sqrt(1−ᾱ_t), sqrt ᾱ_prev, sqrt(1−ᾱ_prev)); ᾱ_prev = 1
    after the last step. Coefficients come from ᾱ rounded to float32, as the training code holds it."""
    abar = np.cumprod(1.0 - cosine_betas(num_train)).astype(np.float32)
    ts = ddim_timesteps(num_train, num_sample)[::-1]
    out = []
    for i, t in enumerate(ts):
        a_t = abar[t]
        a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else np.float32(1.0)
        out.append((int(t), float(np.sqrt(a_t)), float(np.sqrt(1 - a_t)), float(np.sqrt(a_prev)),
                    float(np.sqrt(1 - a_prev))))
    return out


def ddpm_coefficients(num_train: int) -> list[tuple[int, float, float, float]]:
    """Per DDPM step t = T−1 … 0: (t, 1/sqrt(α_t), β_t/sqrt(1−ᾱ_t), σ_t) with σ_t² = β_t(1−ᾱ_{t−1})/(1−ᾱ_t),
    σ_0 = 0 (float32-rounded ᾱ and β, as in training)."""
    betas = cosine_betas(num_train).astype(np.float32)
    abar = np.cumprod(1.0 - cosine_betas(num_train)).astype(np.float32)
    out = []
    for t in range(num_train - 1, -1, -1):
        abar_prev = abar[t - 1] if t > 0 else np.float32(1.0)
        var = betas[t] * (1 - abar_prev) / (1 - abar[t])
        out.append((t, float(1 / np.sqrt(1 - betas[t])), float(betas[t] / np.sqrt(1 - abar[t])),
                    float(np.sqrt(var)) if t > 0 else 0.0))
    return out


def ddim_loop(eps_at: EpsFn, x: torch.Tensor, coeffs: list[tuple[int, float, float, float, float]]) -> torch.Tensor:
    """x_T -> x_0 with deterministic DDIM steps x_prev = sqrt ᾱ_prev · x̂0 + sqrt(1−ᾱ_prev) · ε."""
    for t, sa, s1a, sap, s1ap in coeffs:
        eps = eps_at(x, t)
        x0 = (x - s1a * eps) / sa
        x = sap * x0 + s1ap * eps
    return x


def ddpm_loop(eps_at: EpsFn, x: torch.Tensor, coeffs: list[tuple[int, float, float, float]],
              step_noise: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """x_T -> x_0 by ancestral steps x_{t−1} = (x − β/sqrt(1−ᾱ) ε)/sqrt α + σ_t z; `step_noise(i)` gives z of
    step i (i = 0 for t = T−1)."""
    for i, (t, inv_sqrt_a, eps_coef, sigma) in enumerate(coeffs):
        eps = eps_at(x, t)
        x = (x - eps_coef * eps) * inv_sqrt_a
        if sigma > 0:
            x = x + sigma * step_noise(i)
    return x
