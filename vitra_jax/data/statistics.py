"""Normalization statistics of 102-d actions and states, counting only valid (masked-in) entries.

The release averages per-dataset statistics; here a set of samples gives per-dimension mean and std over
the entries whose mask is 1. A dimension that is never valid gets mean 0 and std 1, so it passes through
unchanged (and stays masked downstream); a constant dimension gets std 0 (the normalizer adds 1e-7).
"""

from __future__ import annotations

import numpy as np

from vitra_jax.handspace.normalize import GaussianNormalizer


def masked_mean_std(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of x (..., D) over entries where mask (..., D) is nonzero."""
    d = x.shape[-1]
    x = np.asarray(x, np.float64).reshape(-1, d)
    m = np.asarray(mask, np.float64).reshape(-1, d)
    n = m.sum(0)
    mean = np.where(n > 0, (x * m).sum(0) / np.maximum(n, 1), 0.0)
    var = np.where(n > 0, (((x - mean) ** 2) * m).sum(0) / np.maximum(n, 1), 1.0)
    return mean, np.sqrt(var)


def fit_normalizer(samples: list[dict]) -> GaussianNormalizer:
    """A `GaussianNormalizer` from samples holding actions/action_mask (N, 102) and state/state_mask (102,)."""
    if not samples:
        raise ValueError("no samples to compute normalization statistics from")
    a_mean, a_std = masked_mean_std(np.stack([s["actions"] for s in samples]),
                                    np.stack([s["action_mask"] for s in samples]))
    s_mean, s_std = masked_mean_std(np.stack([s["state"] for s in samples]),
                                    np.stack([s["state_mask"] for s in samples]))
    return GaussianNormalizer(a_mean, a_std, s_mean, s_std)
