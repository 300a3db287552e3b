"""Temporal outlier rejection for a camera-space hand track (numpy only).

Per-frame hand estimates occasionally jump: a confident MediaPipe detection whose PnP depth is off by tens of
centimetres for a few frames. Two tests find such frames from the wrist trajectory alone:

1. local median: a kept frame whose wrist lies farther than `min_m + per_depth * z` from the median of the
   other kept wrists within `window_s` of it is an outlier (z = that median's depth; PnP depth error grows with
   distance). Repeated with the rejected frames left out until nothing changes, so a burst shorter than half
   the window is caught whole.
2. speed: a kept frame reached and left faster than `max_speed_m_s` while its two kept neighbours are
   within that speed of each other is a one-frame spike.

Rejected frames become untracked (kept=False, score 0); no value is invented. Filling gaps and smoothing are
left to later stages.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from preprocess.records import CamHand


@dataclasses.dataclass(frozen=True)
class OutlierConfig:
    window_s: float = 0.4  # the local median uses kept frames within ±window_s/2 (±6 frames at 30 fps)
    min_neighbours: int = 3  # fewer kept frames in the window: no local-median verdict
    min_m: float = 0.10  # tolerance at zero depth: PnP jitter (~5 cm) plus the median's lag at a track's ends
    per_depth: float = 0.20  # extra tolerance per metre of depth (PnP's depth error is relative)
    max_speed_m_s: float = 5.0  # above a wrist's peak speed in everyday manipulation (~1-2 m/s) plus jitter
    max_rounds: int = 5  # local-median rounds (each can only add rejections)
    default_fps: float = 30.0  # used when the caller does not know the frame rate

    def __post_init__(self):
        if not (self.window_s > 0 and self.min_neighbours >= 1 and self.min_m >= 0 and self.per_depth >= 0
                and self.max_speed_m_s > 0 and self.max_rounds >= 1 and self.default_fps > 0):
            raise ValueError(f"invalid outlier settings: {self}")


def outlier_frames(wrist: np.ndarray, kept: np.ndarray, fps: float | None = None,
                   config: OutlierConfig = OutlierConfig()) -> np.ndarray:
    """Kept frames (T,) bool whose wrist (T, 3) (camera frame, metres) is an outlier of the track."""
    wrist, kept = np.asarray(wrist, np.float64), np.asarray(kept, bool)
    if wrist.shape != kept.shape + (3,) or kept.ndim != 1:
        raise ValueError(f"wrist must be (T, 3) and kept (T,), got {wrist.shape} and {kept.shape}")
    fps = config.default_fps if fps is None else float(fps)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    good = kept & np.isfinite(wrist).all(-1)
    bad = kept & ~good  # non-finite positions cannot be kept
    half = max(1, int(round(config.window_s * fps / 2)))
    for _ in range(config.max_rounds):
        new = _median_outliers(wrist, good, half, config)
        if not new.any():
            break
        good &= ~new
        bad |= new
    bad |= _speed_spikes(wrist, good, fps, config.max_speed_m_s)
    return bad


def _median_outliers(wrist: np.ndarray, good: np.ndarray, half: int, config: OutlierConfig) -> np.ndarray:
    flags = np.zeros(good.shape, bool)
    idx = np.flatnonzero(good)
    for t in idx:
        near = idx[(np.abs(idx - t) <= half) & (idx != t)]
        if near.size < config.min_neighbours:
            continue
        centre = np.median(wrist[near], axis=0)
        tol = config.min_m + config.per_depth * max(centre[2], 0.0)
        flags[t] = np.linalg.norm(wrist[t] - centre) > tol
    return flags


def _speed_spikes(wrist: np.ndarray, good: np.ndarray, fps: float, max_speed: float) -> np.ndarray:
    flags = np.zeros(good.shape, bool)
    idx = np.flatnonzero(good)
    for a, t, b in zip(idx[:-2], idx[1:-1], idx[2:]):
        def speed(i, j):
            return np.linalg.norm(wrist[j] - wrist[i]) * fps / (j - i)
        flags[t] = speed(a, t) > max_speed and speed(t, b) > max_speed and speed(a, b) <= max_speed
    return flags


def reject_outliers(hand: CamHand, fps: float | None = None, config: OutlierConfig = OutlierConfig()) -> CamHand:
    """A copy of `hand` with its outlier frames untracked (kept=False, score 0); other values unchanged."""
    bad = outlier_frames(hand.wrist, hand.kept, fps, config)
    return dataclasses.replace(hand, kept=hand.kept & ~bad, score=np.where(bad, 0.0, hand.score))
