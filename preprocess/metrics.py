"""Scores of temporal segmentation against ground truth: boundary F1 and class-agnostic segment F1@τ.

- Boundary F1 (GEBD-style): predicted cut frames are matched one-to-one to ground-truth boundaries within
  ±tolerance frames, greedily by increasing distance (ties: earlier ground truth, then earlier prediction);
  matched = TP, unmatched predictions = FP, unmatched ground truth = FN.
- Segment F1@τ (MS-TCN `eval.py`'s f_score without labels, since our cuts carry none): predicted intervals
  [start, stop) in order each take the ground-truth interval of highest IoU; a TP if that IoU ≥ τ and the
  ground truth is still unmatched, else an FP; FN = unmatched ground truth. IoU uses MS-TCN's union
  max(stops) − min(starts), so disjoint intervals score ≤ 0.
Counts add up over videos (`Counts.__add__`) before precision/recall/F1, as MS-TCN sums over videos.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

SEGMENT_THRESHOLDS = (0.10, 0.25, 0.50)


@dataclasses.dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """2PR/(P+R); 1.0 when there is nothing to find and nothing was predicted."""
        if self.tp + self.fp + self.fn == 0:
            return 1.0
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def boundary_counts(pred: Sequence[int], gt: Sequence[int], tolerance: int) -> Counts:
    pred, gt = np.asarray(pred, np.int64).reshape(-1), np.asarray(gt, np.int64).reshape(-1)
    if len(pred) == 0 or len(gt) == 0:
        return Counts(0, len(pred), len(gt))
    dist = np.abs(gt[:, None] - pred[None, :])
    gi, pi = np.nonzero(dist <= tolerance)
    order = np.lexsort((pi, gi, dist[gi, pi]))  # by distance, then ground truth, then prediction
    used_g, used_p = np.zeros(len(gt), bool), np.zeros(len(pred), bool)
    tp = 0
    for g, p in zip(gi[order], pi[order]):
        if not used_g[g] and not used_p[p]:
            used_g[g] = used_p[p] = True
            tp += 1
    return Counts(tp, len(pred) - tp, len(gt) - tp)


def boundary_f1(pred: Sequence[int], gt: Sequence[int], tolerance: int = 5) -> float:
    return boundary_counts(pred, gt, tolerance).f1


def segment_counts(pred: Sequence[tuple[int, int]], gt: Sequence[tuple[int, int]], threshold: float) -> Counts:
    pred, gt = np.asarray(pred, np.float64).reshape(-1, 2), np.asarray(gt, np.float64).reshape(-1, 2)
    if len(gt) == 0:
        return Counts(0, len(pred), 0)
    hits = np.zeros(len(gt), bool)
    tp = fp = 0
    for start, stop in pred:
        inter = np.minimum(stop, gt[:, 1]) - np.maximum(start, gt[:, 0])
        union = np.maximum(stop, gt[:, 1]) - np.minimum(start, gt[:, 0])
        iou = inter / union
        best = int(np.argmax(iou))
        if iou[best] >= threshold and not hits[best]:
            hits[best] = True
            tp += 1
        else:
            fp += 1
    return Counts(tp, fp, int((~hits).sum()))


def segment_f1(pred: Sequence[tuple[int, int]], gt: Sequence[tuple[int, int]], threshold: float) -> float:
    return segment_counts(pred, gt, threshold).f1
