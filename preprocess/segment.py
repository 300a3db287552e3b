"""Atomic action segmentation of one hand at minima of its world wrist speed (VITRA §III stage 6).

Per hand, in O(T):
1. Tracked runs: untracked gaps up to `max_gap_seconds` are bridged (positions interpolated linearly);
   longer gaps split the track and are reported as dropped ('untracked').
2. Speed: Savitzky–Golay derivative of the wrist position (window `smooth_seconds`, order 2), in m/s.
3. Cuts: speed minima at least `min_separation_seconds` apart whose speed rises by `min_depth_mps` on both
   sides (topographic prominence) and stays below `max_relative_speed` of the lower neighbouring peak.
   A pause is a flat minimum: the cut goes to the middle of the frames within `plateau_fraction` of the
   depth above the minimum, so a long pause is split evenly between its two actions.
4. Cuts leaving a piece shorter than `min_segment_seconds` are removed (the shallower first); pieces longer
   than `max_segment_seconds` are split at their slowest frame (`split_long`) or dropped ('too_long').
5. Pieces whose smoothed wrist never gets `min_motion_m` away from where it started are dropped
   ('low_motion'); tracked runs shorter than a segment are dropped ('too_short').
Every frame ends up in exactly one segment or dropped interval. The defaults were tuned on synthetic
minimum-jerk reaches (`python -m preprocess.benchmarks.segmentation`, tuning seeds apart from the reported
ones); at 30 fps: 13-frame smoothing, cuts ≥ 15 frames apart, segments 0.5–10 s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.signal import find_peaks, savgol_filter

from preprocess.records import Dropped, Segment
from vitra_jax.handspace.trajectory import HandTrack


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    smooth_seconds: float = 0.4  # Savitzky–Golay window on positions (order 2), before differentiating
    min_separation_seconds: float = 0.5  # cuts closer than this keep only the deeper one
    min_depth_mps: float = 0.08  # the speed must rise this much on both sides of a cut
    max_relative_speed: float = 0.5  # cut speed <= this × the lower of the neighbouring speed peaks
    plateau_fraction: float = 0.4  # a cut sits mid-way through the frames within this × depth of the min
    min_segment_seconds: float = 0.5
    max_segment_seconds: float = 10.0
    split_long: bool = True  # split over-long pieces at their slowest frame instead of dropping them
    min_motion_m: float = 0.03  # the wrist must get this far from its start position within a segment
    max_gap_seconds: float = 0.2  # untracked gaps up to this are interpolated


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def tracked_runs(kept: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """Runs of tracked frames with untracked gaps of at most `max_gap` frames bridged."""
    bridged = kept.astype(bool).copy()
    for a, b in _runs(~bridged):
        if a > 0 and b < len(kept) and b - a <= max_gap:
            bridged[a:b] = True
    return _runs(bridged)


def _interpolate(wrist: np.ndarray, kept: np.ndarray) -> np.ndarray:
    t = np.arange(len(wrist))
    return np.stack([np.interp(t, t[kept], wrist[kept, i]) for i in range(3)], 1)


def _window(seconds: float, fps: float, n: int) -> int:
    w = max(3, int(round(seconds * fps)) | 1)
    return min(w, n if n % 2 else n - 1)


def smoothed_speed(pos: np.ndarray, fps: float, config: SegmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed positions (T, 3) and speed (T,) in m/s."""
    w = _window(config.smooth_seconds, fps, len(pos))
    if w < 3:  # runs of 2 frames: plain differences
        return pos, np.linalg.norm(np.gradient(pos, axis=0), axis=1) * fps
    smooth = savgol_filter(pos, w, 2, axis=0, mode="interp")
    vel = savgol_filter(pos, w, 2, deriv=1, axis=0, mode="interp") * fps
    return smooth, np.linalg.norm(vel, axis=1)


def find_cuts(speed: np.ndarray, fps: float, config: SegmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cut frames (sorted) and their depths inside one tracked run, before length rules."""
    distance = max(1, int(round(config.min_separation_seconds * fps)))
    idx, props = find_peaks(-speed, distance=distance, prominence=config.min_depth_mps)
    if not len(idx):
        return np.zeros(0, int), np.zeros(0)
    prom = props["prominences"]
    # The lower neighbouring peak is speed + prominence (prominence is measured to the higher base of -speed).
    ok = speed[idx] <= config.max_relative_speed * (speed[idx] + prom)
    idx, prom = idx[ok], prom[ok]
    if not len(idx):
        return np.zeros(0, int), np.zeros(0)
    # Peak speed between neighbouring accepted minima (run edges outside): the plateau of a minimum is
    # measured against its own two actions, not against faster ones further away.
    peaks = np.maximum.reduceat(speed, np.concatenate([[0], idx]))
    cuts = []
    for k, m in enumerate(idx):
        level = speed[m] + config.plateau_fraction * (min(peaks[k], peaks[k + 1]) - speed[m])
        lo, hi = m, m
        while lo > 0 and speed[lo - 1] <= level:
            lo -= 1
        while hi < len(speed) - 1 and speed[hi + 1] <= level:
            hi += 1
        cuts.append((lo + hi + 1) // 2)
    cuts = np.asarray(cuts)
    keep = np.concatenate([[True], np.diff(cuts) > 0])  # two minima of one plateau give one cut
    return cuts[keep], prom[keep]


def _enforce_min_length(cuts: list[int], depth: list[float], start: int, stop: int, min_len: int):
    cuts, depth = list(cuts), list(depth)
    while cuts:
        bounds = [start, *cuts, stop]
        lengths = np.diff(bounds)
        k = int(np.argmin(lengths))
        if lengths[k] >= min_len:
            break
        # piece k lies between cut k-1 and cut k; drop the shallower of the cuts that bound it
        neighbours = [j for j in (k - 1, k) if 0 <= j < len(cuts)]
        j = min(neighbours, key=lambda j: depth[j])
        del cuts[j], depth[j]
    return cuts


def _split_long(a: int, b: int, speed: np.ndarray, min_len: int, max_len: int) -> list[tuple[int, int]]:
    """Split [a, b) (run-relative) at its slowest frame until every piece is at most max_len."""
    if b - a <= max_len or b - a < 2 * min_len:
        return [(a, b)]
    m = a + min_len + int(np.argmin(speed[a + min_len:b - min_len + 1]))
    return _split_long(a, m, speed, min_len, max_len) + _split_long(m, b, speed, min_len, max_len)


def segment(track: HandTrack, fps: float, hand: str, *, config: SegmentConfig = SegmentConfig(),
            frame_offset: int = 0) -> tuple[list[Segment], list[Dropped]]:
    """Segments and dropped intervals of one hand's world track; frames are track index + frame_offset."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    kept = np.asarray(track.kept, bool)
    n = len(kept)
    min_len = max(2, int(round(config.min_segment_seconds * fps)))
    max_len = int(round(config.max_segment_seconds * fps))
    if max_len < 2 * min_len:
        raise ValueError("max_segment_seconds must be at least twice min_segment_seconds")
    segments, dropped = [], []

    def drop(a, b, reason):
        dropped.append(Dropped(hand=hand, start=int(a) + frame_offset, stop=int(b) + frame_offset, reason=reason))

    runs = tracked_runs(kept, int(round(config.max_gap_seconds * fps)))
    covered = np.zeros(n, bool)
    for a, b in runs:
        covered[a:b] = True
    for a, b in _runs(~covered):
        drop(a, b, "untracked")
    for a, b in runs:
        if b - a < min_len:
            drop(a, b, "too_short")
            continue
        wrist = np.asarray(track.wrist[a:b], np.float64)
        pos = _interpolate(wrist, kept[a:b]) if not kept[a:b].all() else wrist
        smooth, speed = smoothed_speed(pos, fps, config)
        cuts, depth = find_cuts(speed, fps, config)
        cuts = _enforce_min_length(list(cuts), list(depth), 0, b - a, min_len)
        bounds = [0, *cuts, b - a]
        pieces = []
        for s, e in zip(bounds[:-1], bounds[1:]):
            pieces += _split_long(s, e, speed, min_len, max_len) if config.split_long else [(s, e)]
        for s, e in pieces:
            if e - s > max_len:
                drop(a + s, a + e, "too_long")
            elif np.linalg.norm(smooth[s:e] - smooth[s], axis=1).max() < config.min_motion_m:
                drop(a + s, a + e, "low_motion")
            else:
                segments.append(Segment(hand=hand, start=int(a + s) + frame_offset, stop=int(a + e) + frame_offset))
    dropped.sort(key=lambda d: d.start)
    return segments, dropped
