"""Temporal outlier rejection on synthetic wrist tracks with planted jumps (the planted indices are the truth)."""

import dataclasses

import numpy as np
import pytest

from preprocess.hands.outliers import OutlierConfig, outlier_frames, reject_outliers
from preprocess.records import CamHand

FPS = 30.0
DEFAULT = OutlierConfig()


def smooth_track(n: int, depth: float, seed: int, noise_m: float = 0.01) -> np.ndarray:
    """A wrist moving on a smooth loop (peak speed ~0.6 m/s) at about `depth` metres, with per-frame jitter."""
    t = np.arange(n) / FPS
    path = np.stack([0.15 * np.sin(2.0 * t), 0.1 * np.cos(3.0 * t), depth + 0.08 * np.sin(1.5 * t)], axis=-1)
    return path + np.random.default_rng(seed).normal(0.0, noise_m, (n, 3))


def planted(wrist: np.ndarray, frames: list[int], scale: float) -> np.ndarray:
    """PnP-like failures: the wrist pushed along its viewing ray to `scale` times its depth."""
    out = wrist.copy()
    out[frames] *= scale
    return out


def flagged(wrist, kept=None, fps=FPS, config=DEFAULT):
    kept = np.ones(len(wrist), bool) if kept is None else kept
    return np.flatnonzero(outlier_frames(wrist, kept, fps, config)).tolist()


@pytest.mark.parametrize("depth,scale", [(0.4, 1.7), (0.4, 0.5), (1.5, 1.4)])  # 28 cm, 20 cm, 60 cm away
def test_single_frames_and_bursts_are_flagged_exactly(depth, scale):
    bad = [0, 10, 30, 31, 50, 51, 52, 89]  # first and last frames, a pair, a burst of three
    assert flagged(planted(smooth_track(90, depth, seed=1), bad, scale)) == bad


def test_a_burst_before_a_gap_is_flagged_whole():
    wrist = planted(smooth_track(60, 0.5, seed=2), [20, 21, 22, 23], 1.6)  # as in the VITRA clip: then untracked
    kept = np.ones(60, bool)
    kept[24:31] = False
    assert flagged(wrist, kept) == [20, 21, 22, 23]  # the last two only once the first two are left out
    assert flagged(wrist, kept, config=dataclasses.replace(DEFAULT, max_rounds=1)) == [20, 21, 22]


def test_tolerance_grows_with_depth():
    jump = np.array([0.0, 0.0, 0.25])  # 25 cm: far beyond PnP error at 0.4 m, within it at 2 m
    near, far = smooth_track(60, 0.4, seed=3), smooth_track(60, 2.0, seed=3)
    near[30] += jump
    far[30] += jump
    config = dataclasses.replace(OutlierConfig(), max_speed_m_s=100.0)  # the local-median test alone
    assert flagged(near, config=config) == [30] and flagged(far, config=config) == []


def test_speed_spikes_are_judged_at_the_clip_frame_rate():
    far = smooth_track(60, 2.0, seed=4)
    far[30] += [0.0, 0.0, 0.25]  # within the local-median tolerance at 2 m; 7.5 m/s in and out at 30 fps
    assert flagged(far, fps=30.0) == [30]
    assert flagged(far, fps=10.0) == []  # 2.5 m/s: a plausible movement at 10 fps


def test_clean_tracks_are_untouched():
    for depth, seed in ((0.3, 5), (0.6, 6), (1.5, 7)):
        wrist = smooth_track(120, depth, seed=seed, noise_m=0.02)
        kept = np.random.default_rng(seed).random(120) > 0.3  # scattered untracked frames
        assert flagged(wrist, kept) == []
        hand = camhand(wrist, kept)
        out = reject_outliers(hand, FPS)
        for f in dataclasses.fields(CamHand):
            np.testing.assert_array_equal(getattr(out, f.name), getattr(hand, f.name), err_msg=f.name)


def test_a_fast_straight_reach_is_kept_up_to_the_track_ends():
    t = np.arange(30) / FPS
    reach = np.stack([0.7 * t, -0.7 * t, 0.35 + 0.1 * t], axis=-1)  # ~1 m/s, all 30 frames kept
    assert flagged(reach) == []  # at the ends the one-sided median lags ~12 cm, within the 17 cm tolerance


def camhand(wrist: np.ndarray, kept: np.ndarray) -> CamHand:
    n = len(wrist)
    rng = np.random.default_rng(0)
    return CamHand(kept=kept.copy(), wrist=wrist, orient=rng.normal(size=(n, 3, 3)),
                   hand_pose=rng.normal(size=(n, 15, 3, 3)), joints=rng.normal(size=(n, 21, 3)),
                   beta=rng.normal(size=10), score=np.where(kept, 0.9, 0.0))


def test_rejected_frames_become_untracked_and_nothing_else_changes():
    wrist = planted(smooth_track(40, 0.5, seed=8), [12, 13], 1.8)
    kept = np.ones(40, bool)
    kept[30] = False
    hand = camhand(wrist, kept)
    before = {f.name: np.copy(getattr(hand, f.name)) for f in dataclasses.fields(CamHand)}
    out = reject_outliers(hand, FPS)
    expect_kept = kept.copy()
    expect_kept[[12, 13]] = False
    np.testing.assert_array_equal(out.kept, expect_kept)
    np.testing.assert_array_equal(out.score, np.where(expect_kept, 0.9, 0.0))
    for name in ("wrist", "orient", "hand_pose", "joints", "beta"):  # no value invented or moved
        np.testing.assert_array_equal(getattr(out, name), before[name], err_msg=name)
    for name, value in before.items():  # the input is left as it was
        np.testing.assert_array_equal(getattr(hand, name), value, err_msg=name)


def test_edge_cases():
    wrist = smooth_track(10, 0.5, seed=9)
    assert flagged(wrist, np.zeros(10, bool)) == []  # all untracked
    assert flagged(np.zeros((0, 3)), np.zeros(0, bool)) == []  # no frames
    wild = wrist.copy()
    wild[7] = [5.0, -3.0, 9.0]
    for kept_frames in ([7], [2, 7]):  # one or two kept frames: nothing to judge them against
        kept = np.zeros(10, bool)
        kept[kept_frames] = True
        assert flagged(wild, kept) == []
    nan = wrist.copy()
    nan[4] = np.nan
    assert flagged(nan) == [4]  # a non-finite position cannot stay kept
    kept = np.zeros(10, bool)
    kept[[1, 4, 6]] = True
    assert flagged(nan, kept) == [4]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"wrist must be \(T, 3\) and kept \(T,\)"):
        outlier_frames(np.zeros((5, 2)), np.ones(5, bool))
    with pytest.raises(ValueError, match="fps must be positive"):
        outlier_frames(np.zeros((5, 3)), np.ones(5, bool), fps=0.0)
    with pytest.raises(ValueError, match="invalid outlier settings"):
        OutlierConfig(window_s=-1.0)
