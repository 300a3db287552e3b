"""Per-dimension running statistics in fixed memory: masked moments and a quantile sketch (numpy only).

Both take batches (N, D) with a validity mask and never keep the samples, so their memory does not grow
with the data (26M frames x 102 dims would need ~21 GB as float64).
"""

from __future__ import annotations

import math

import numpy as np


class QuantileSketch:
    """Per-dimension quantiles of a stream in fixed memory: a log-spaced histogram (DDSketch-like).

    With γ = (1+α)/(1−α), bucket s ≥ 1 on each sign side holds min_abs·γ^(s−1) < |x| ≤ min_abs·γ^s and
    one bucket holds |x| ≤ min_abs; a bucket reads as ±2·min_abs·γ^s/(γ+1), within α·|x| of every x in it.
    So the estimate of an order statistic x_(k) is within α·|x_(k)| + min_abs of it, for
    |x_(k)| ≤ max_abs (larger values land in the last bucket). Memory: dims × (2K+1) int64 counters,
    K = ⌈log_γ(max_abs/min_abs)⌉, e.g. 9.4 MB for 102 dims at α = 0.002, 1e-6…1e4, however many samples.
    The exact per-dimension minimum and maximum bound the estimates.
    """

    def __init__(self, dims: int, relative_error: float = 0.002, min_abs: float = 1e-6, max_abs: float = 1e4):
        if not 0 < relative_error < 1 or not 0 < min_abs < max_abs:
            raise ValueError(f"need 0 < relative_error < 1 and 0 < min_abs < max_abs, got "
                             f"{relative_error}, {min_abs}, {max_abs}")
        self.relative_error, self.min_abs, self.max_abs = relative_error, min_abs, max_abs
        self.gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self.gamma)
        self.k = math.ceil(math.log(max_abs / min_abs) / self._log_gamma)
        self.counts = np.zeros((dims, 2 * self.k + 1), np.int64)
        self.lo = np.full(dims, np.inf)
        self.hi = np.full(dims, -np.inf)

    def update(self, x: np.ndarray, valid: np.ndarray) -> None:
        """Add the entries of x (N, dims) where valid (N, dims) is True."""
        dims, width = self.counts.shape
        valid = np.asarray(valid, bool)
        x = np.where(valid, np.asarray(x, np.float64), 0.0)
        s = np.ceil(np.log(np.maximum(np.abs(x), self.min_abs) / self.min_abs) / self._log_gamma)
        s = np.clip(s, 0, self.k).astype(np.int64) * np.where(x < 0, -1, 1)
        flat = (s + self.k + np.arange(dims) * width)[valid]
        self.counts += np.bincount(flat, minlength=dims * width).reshape(dims, width)
        self.lo = np.minimum(self.lo, np.where(valid, x, np.inf).min(0, initial=np.inf))
        self.hi = np.maximum(self.hi, np.where(valid, x, -np.inf).max(0, initial=-np.inf))

    def quantile(self, p: float) -> np.ndarray:
        """Per dimension, the estimate of element ⌊p·(n−1)⌋ of the sorted valid values (0 where n = 0)."""
        cum = np.cumsum(self.counts, axis=1)
        n = cum[:, -1]
        rank = np.floor(p * np.maximum(n - 1, 0)).astype(np.int64)
        s = np.argmax(cum > rank[:, None], axis=1) - self.k
        value = np.sign(s) * self.min_abs * 2 * self.gamma ** np.abs(s) / (self.gamma + 1)
        return np.where(n > 0, np.clip(value, np.minimum(self.lo, self.hi), self.hi), 0.0)


class RunningMoments:
    """Per-dimension count, mean and sum of squared deviations, merged batch by batch (Chan et al.)."""

    def __init__(self, dims: int):
        self.n, self.mean, self.m2 = np.zeros(dims), np.zeros(dims), np.zeros(dims)

    def update(self, x: np.ndarray, valid: np.ndarray) -> None:
        w = np.asarray(valid, np.float64)
        x = np.where(w > 0, np.asarray(x, np.float64), 0.0)
        nb = w.sum(0)
        mb = (x * w).sum(0) / np.maximum(nb, 1)
        m2b = (((x - mb) ** 2) * w).sum(0)
        n = self.n + nb
        delta = mb - self.mean
        safe = np.maximum(n, 1)
        self.mean = self.mean + delta * nb / safe
        self.m2 = self.m2 + m2b + delta**2 * self.n * nb / safe
        self.n = n
