"""Diffusion for the action head as pure functions (VITRA §2.5): cosine schedule, ε-loss, DDIM/DDPM steps.

Schedule `squaredcos_cap_v2` with 100 training steps, ε-prediction, fixed-small posterior variance.
Sampling loops live in `policy.py`; here only the per-step maths, so both are easy to test.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from vitra_jax.handspace import layout


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Numpy arrays over the T training steps (index t = 0..T-1)."""

    betas: np.ndarray
    alphas_cumprod: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.betas)


def cosine_schedule(num_steps: int = 100, max_beta: float = 0.999) -> Schedule:
    """ᾱ(t) = cos²((t/T + 0.008)/1.008 · π/2); β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta) (improved DDPM)."""
    abar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                      for i in range(num_steps)], dtype=np.float64)
    return Schedule(betas=betas, alphas_cumprod=np.cumprod(1.0 - betas))


def ddim_timesteps(num_train: int, num_sample: int) -> np.ndarray:
    """Respaced timesteps as IDDPM's "ddimN": range(0, T, stride) for the first stride giving N steps.

    (100, 10) -> 0, 10, ..., 90, ascending.
    """
    for stride in range(1, num_train + 1):
        steps = np.arange(0, num_train, stride)
        if len(steps) == num_sample:
            return steps
    raise ValueError(f"no stride of {num_train} training steps gives exactly {num_sample} DDIM steps")


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """x_t = sqrt(ᾱ_t) x0 + sqrt(1 − ᾱ_t) ε; t (B,) int, x0 (B, ...)."""
    abar = jnp.asarray(schedule.alphas_cumprod, jnp.float32)[t]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return jnp.sqrt(abar).reshape(shape) * x0 + jnp.sqrt(1 - abar).reshape(shape) * noise


def component_counts(mask: jax.Array) -> jax.Array:
    """(components, 2) per `layout.LOSS_COMPONENTS` entry: valid mask entries over its dims, and valid (b, k)
    at its first dim. These normalise `masked_component_loss`."""
    mask = mask.astype(jnp.float32)
    return jnp.stack([jnp.stack([jnp.sum(mask[..., sl]), jnp.sum(mask[..., sl.start])])
                      for sl, _ in layout.LOSS_COMPONENTS.values()])


def masked_component_loss(eps_pred: jax.Array, eps: jax.Array, mask: jax.Array, weights: dict[str, float],
                          counts: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked MSE per loss component, combined by valid-step counts (official `DiffusionPolicy.loss`).

    eps_pred, eps, mask: (B, N, D) with D ≥ 102. loss_c = Σ(ε̂−ε)²·m / Σm over the component's dims, times its
    weight; total = Σ_c loss_c·count_c / Σ_c count_c with count_c = number of valid (b, k) at the component's
    first dim. Returns (total, {component: weighted loss_c}).

    `counts` (`component_counts` of a larger batch this one is a part of) replaces the normalisers: total and
    parts are then this part's share, linear in its squared errors, and the shares of the parts add up to
    the larger batch's loss exactly.
    """
    counts = component_counts(mask) if counts is None else counts
    sq = jnp.square(eps_pred.astype(jnp.float32) - eps.astype(jnp.float32)) * mask.astype(jnp.float32)
    parts, total = {}, 0.0
    for i, (name, (sl, kind)) in enumerate(layout.LOSS_COMPONENTS.items()):
        parts[name] = weights[kind] * jnp.sum(sq[..., sl]) / jnp.maximum(counts[i, 0], 1.0)
        total = total + parts[name] * counts[i, 1]
    return total / jnp.maximum(jnp.sum(counts[:, 1]), 1.0), parts


def ddim_step(schedule: Schedule, x: jax.Array, eps: jax.Array, t: jax.Array, t_prev: jax.Array) -> jax.Array:
    """Deterministic DDIM (η = 0) from timestep t to t_prev (t_prev < 0 means the final clean sample)."""
    abar = jnp.asarray(schedule.alphas_cumprod, jnp.float32)
    a_t = abar[t]
    a_prev = jnp.where(t_prev >= 0, abar[jnp.maximum(t_prev, 0)], 1.0)
    x0 = (x - jnp.sqrt(1 - a_t) * eps) / jnp.sqrt(a_t)
    return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev) * eps


def ddpm_step(schedule: Schedule, x: jax.Array, eps: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
    """Ancestral DDPM step t -> t−1 with the fixed-small (posterior) variance; no noise at t = 0."""
    betas = jnp.asarray(schedule.betas, jnp.float32)
    abar = jnp.asarray(schedule.alphas_cumprod, jnp.float32)
    abar_prev = jnp.where(t > 0, abar[jnp.maximum(t - 1, 0)], 1.0)
    a_t, b_t = 1 - betas[t], betas[t]
    mean = (x - b_t / jnp.sqrt(1 - abar[t]) * eps) / jnp.sqrt(a_t)
    var = b_t * (1 - abar_prev) / (1 - abar[t])
    return mean + jnp.where(t > 0, jnp.sqrt(var), 0.0) * noise
