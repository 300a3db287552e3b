"""Boundary F1 and segment F1@τ against hand-computed cases and MS-TCN's f_score written out."""

import numpy as np
import pytest

from preprocess import metrics


def test_boundary_f1_hand_computed():
    # Pairs within ±5: (gt 10, pred 12) d=2, (gt 10, pred 14) d=4, (gt 30, pred 29) d=1. Greedy by distance:
    # 30↔29, then 10↔12; 14 and 70 are false positives, 50 is missed. P = 2/4, R = 2/3, F1 = 4/7.
    c = metrics.boundary_counts([12, 14, 29, 70], [10, 30, 50], tolerance=5)
    assert (c.tp, c.fp, c.fn) == (2, 2, 1)
    assert c.precision == 0.5 and c.recall == pytest.approx(2 / 3) and c.f1 == pytest.approx(4 / 7)
    # One prediction between two boundaries at equal distance matches only one (the earlier).
    c = metrics.boundary_counts([13], [10, 16], tolerance=5)
    assert (c.tp, c.fp, c.fn) == (1, 0, 1)
    # Greedy by distance, not by order: pred 14 goes to gt 15 (d=1) rather than gt 10 (d=4), which leaves
    # pred 5 for gt 10 (d=5): two matches where taking ground truth in order would find one.
    assert metrics.boundary_counts([14, 5], [10, 15], tolerance=5) == metrics.Counts(2, 0, 0)
    assert metrics.boundary_counts([16], [10], tolerance=5) == metrics.Counts(0, 1, 1)  # 6 > 5
    assert metrics.boundary_f1([], [], 5) == 1.0 and metrics.boundary_f1([3], [], 5) == 0.0
    # Counts sum over videos before the ratios.
    total = metrics.boundary_counts([12], [10], 5) + metrics.boundary_counts([40], [10, 20], 5)
    assert total == metrics.Counts(1, 1, 2) and total.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))


def test_segment_f1_hand_computed():
    gt = [(0, 10), (10, 20), (20, 40)]
    pred = [(0, 12), (12, 18), (18, 40)]
    # IoUs with their best ground truth: 10/12 = 0.83, 6/10 = 0.6, 20/22 = 0.91.
    assert metrics.segment_f1(pred, gt, 0.5) == 1.0
    c = metrics.segment_counts(pred, gt, 0.75)
    assert (c.tp, c.fp, c.fn) == (2, 1, 1) and c.f1 == pytest.approx(2 / 3)
    # A second prediction on an already matched ground truth is a false positive.
    assert metrics.segment_counts([(0, 10), (0, 9)], [(0, 10)], 0.5) == metrics.Counts(1, 1, 0)
    assert metrics.segment_counts([], gt, 0.1) == metrics.Counts(0, 0, 3)
    assert metrics.segment_counts([(0, 5)], [], 0.1) == metrics.Counts(0, 1, 0)


def ms_tcn_f_score(p_start, p_end, y_start, y_end, overlap):
    """MS-TCN eval.py f_score (yabufarha/ms-tcn), written out with every label equal (class-agnostic)."""
    tp = 0
    fp = 0
    hits = np.zeros(len(y_start))
    for j in range(len(p_start)):
        intersection = np.minimum(p_end[j], y_end) - np.maximum(p_start[j], y_start)
        union = np.maximum(p_end[j], y_end) - np.minimum(p_start[j], y_start)
        iou = (1.0 * intersection / union) * ([True for _ in range(len(y_start))])
        idx = np.array(iou).argmax()
        if iou[idx] >= overlap and not hits[idx]:
            tp += 1
            hits[idx] = 1
        else:
            fp += 1
    fn = len(y_start) - sum(hits)
    return float(tp), float(fp), float(fn)


def _random_intervals(rng, n_frames):
    cuts = np.sort(rng.choice(np.arange(1, n_frames), size=int(rng.integers(1, 8)), replace=False))
    bounds = np.concatenate([[0], cuts, [n_frames]])
    keep = rng.random(len(bounds) - 1) > 0.2  # some background gaps
    keep[rng.integers(len(keep))] = True  # MS-TCN's argmax needs one ground-truth segment
    return [(int(a), int(b)) for a, b, k in zip(bounds[:-1], bounds[1:], keep) if k]


def test_segment_f1_equals_ms_tcn_on_random_interval_lists():
    rng = np.random.default_rng(0)
    for _ in range(300):
        pred, gt = _random_intervals(rng, 60), _random_intervals(rng, 60)
        for tau in metrics.SEGMENT_THRESHOLDS:
            ref = ms_tcn_f_score([a for a, _ in pred], [b for _, b in pred], np.array([a for a, _ in gt]),
                                 np.array([b for _, b in gt]), tau)
            c = metrics.segment_counts(pred, gt, tau)
            assert (c.tp, c.fp, c.fn) == ref
