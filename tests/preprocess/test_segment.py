"""Atomic segmentation at wrist-speed minima: planted boundaries, drop reasons, the official episode."""

import time

import numpy as np
import pytest

from preprocess.records import Dropped, Segment
from preprocess.segment import SegmentConfig, segment
from tests.preprocess import vitra_example
from vitra_jax.handspace.trajectory import HandTrack


def _track(wrist, kept=None):
    n = len(wrist)
    return HandTrack(wrist=wrist, orient=np.tile(np.eye(3), (n, 1, 1)), hand_pose=np.tile(np.eye(3), (n, 15, 1, 1)),
                     joints=np.repeat(wrist[:, None], 21, 1), kept=np.ones(n, bool) if kept is None else kept,
                     beta=np.zeros(10))


def _reach(p0, p1, n):
    """Minimum-jerk move written out: p0 + (p1 − p0)(10τ³ − 15τ⁴ + 6τ⁵), τ = i/n."""
    tau = np.arange(n)[:, None] / n
    return np.asarray(p0) + (np.asarray(p1) - np.asarray(p0)) * (10 * tau**3 - 15 * tau**4 + 6 * tau**5)


def _planted():
    """Rest 10, reach 30 frames, pause 20, reach 24, reach 36 (no pause), rest 10: 130 frames.
    Boundaries: the pause's middle 10 + 30 + 10 = 50, the junction 10 + 30 + 20 + 24 = 84."""
    a, b, c, d = np.zeros(3), np.array([0.25, 0, 0]), np.array([0.25, 0.2, 0]), np.array([0.0, 0.2, 0.3])
    parts = [np.tile(a, (10, 1)), _reach(a, b, 30), np.tile(b, (20, 1)), _reach(b, c, 24), _reach(c, d, 36),
             np.tile(d, (10, 1))]
    return np.concatenate(parts)


@pytest.mark.parametrize("noise_m, tol", [(0.0, 1), (0.005, 5)])
def test_planted_boundaries_are_found(noise_m, tol):
    wrist = _planted()
    assert len(wrist) == 130
    wrist = wrist + np.random.default_rng(4).normal(0, noise_m, wrist.shape)
    segments, dropped = segment(_track(wrist), 30.0, "left")
    assert dropped == [] and [s.hand for s in segments] == ["left"] * 3
    assert segments[0].start == 0 and segments[-1].stop == 130
    assert segments[0].stop == segments[1].start and segments[1].stop == segments[2].start
    assert abs(segments[0].stop - 50) <= tol and abs(segments[1].stop - 84) <= tol, segments


def test_drop_reasons_and_untracked_gaps():
    n = 160
    wrist = np.zeros((n, 3))
    wrist[:60] = np.concatenate([_reach([0, 0, 0], [0.3, 0, 0], 45), np.tile([0.3, 0, 0], (15, 1))])
    wrist[80:90] = _reach([0.3, 0, 0], [0.3, 0.2, 0], 10)
    wrist[100:] = [0.3, 0.2, 0.0]  # the hand rests: low motion
    kept = np.ones(n, bool)
    kept[20:23] = False  # 3 frames (0.1 s) untracked: bridged, not a split
    kept[60:80] = kept[90:100] = False  # 20 and 10 frames untracked: splits
    wrist[~kept] = np.nan  # untracked values must not be used
    segments, dropped = segment(_track(wrist, kept), 30.0, "right", frame_offset=1000)
    assert segments == [Segment("right", 1000, 1060)]
    assert dropped == [Dropped("right", 1060, 1080, "untracked"), Dropped("right", 1080, 1090, "too_short"),
                       Dropped("right", 1090, 1100, "untracked"), Dropped("right", 1100, 1160, "low_motion")]


def test_too_long_is_dropped_or_split():
    # 12 s of circling at constant speed (0.1 m radius, one turn per 2 s): no speed minimum anywhere.
    t = np.arange(360) / 30.0
    wrist = np.stack([0.1 * np.cos(np.pi * t), 0.1 * np.sin(np.pi * t), np.zeros_like(t)], 1)
    segments, dropped = segment(_track(wrist), 30.0, "right", config=SegmentConfig(split_long=False))
    assert segments == [] and dropped == [Dropped("right", 0, 360, "too_long")]
    segments, dropped = segment(_track(wrist), 30.0, "right")
    assert dropped == [] and segments[0].start == 0 and segments[-1].stop == 360
    assert all(15 <= s.stop - s.start <= 300 for s in segments) and len(segments) >= 2
    assert all(a.stop == b.start for a, b in zip(segments, segments[1:]))


def test_official_episode_is_one_segment(fixtures_dir):
    z = vitra_example.arrays(fixtures_dir)
    tracks = {h: HandTrack(wrist=z[f"{h}/transl_worldspace"], orient=z[f"{h}/global_orient_worldspace"],
                           hand_pose=z[f"{h}/hand_pose"], joints=z[f"{h}/joints_worldspace"],
                           kept=z[f"{h}/kept_frames"].astype(bool), beta=z[f"{h}/beta"]) for h in ("left", "right")}
    # The release labels this clip as one action, 'Pick up the spray bottle.', frames [0, 25).
    assert segment(tracks["right"], 30.0, "right") == ([Segment("right", 0, 25)], [])
    assert segment(tracks["left"], 30.0, "left") == ([], [Dropped("left", 0, 25, "untracked")])


def test_every_frame_is_in_exactly_one_interval_and_long_tracks_are_fast():
    rng = np.random.default_rng(9)
    for _ in range(20):
        n = int(rng.integers(20, 600))
        wrist = np.cumsum(rng.normal(0, 0.01, (n, 3)), 0)
        kept = np.repeat(rng.random(n // 10 + 1) > 0.3, 10)[:n]
        segments, dropped = segment(_track(wrist, kept), 30.0, "left", frame_offset=7)
        cover = np.zeros(n, int)
        for iv in segments + dropped:
            assert 7 <= iv.start < iv.stop <= n + 7
            cover[iv.start - 7:iv.stop - 7] += 1
        assert (cover == 1).all()
        assert all(kept[s.start - 7:s.stop - 7].any() for s in segments)
    # 30 minutes at 30 fps: linear time, vectorised.
    n = 54000
    wrist = np.cumsum(rng.normal(0, 0.01, (n, 3)), 0)
    start = time.perf_counter()
    segments, dropped = segment(_track(wrist), 30.0, "right")
    elapsed = time.perf_counter() - start
    print(f"{n} frames: {len(segments)} segments, {len(dropped)} dropped in {elapsed:.2f} s")
    assert elapsed < 5.0 and len(segments) > 100


def test_benchmark_meets_its_goal_at_realistic_noise(capsys):
    from preprocess.benchmarks import segmentation

    # Seeds 5000… were used neither for tuning (0–199) nor for the reported table (1000–1199).
    total = segmentation.evaluate(SegmentConfig(), segmentation.REALISTIC_MM / 1000, 40, seed=5000)
    assert total["boundary"].f1 >= 0.9 and total["f1@0.50"].f1 >= 0.9
    # The generator's true boundaries sit in the middle of the still stretch between two reaches.
    for seed in range(5):
        wrist, bounds, segs = segmentation.synthetic_reaches(np.random.default_rng(seed), 0.0)
        still = np.linalg.norm(np.diff(wrist, axis=0), axis=1) < 1e-3
        for b in bounds:
            lo, hi = b, b
            while still[lo - 1]:
                lo -= 1
            while still[hi]:
                hi += 1
            assert still[b] and abs((lo + hi) / 2 - b) <= 2.5, (seed, b, lo, hi)
        assert segs[0] == (0, bounds[0]) and segs[-1][1] == len(wrist)
    assert segmentation.main(["--episodes", "3"]) == 0
    out = capsys.readouterr().out
    assert "5 mm *" in out and "F1@0.50" in out
