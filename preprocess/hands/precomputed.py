"""Hands computed elsewhere: VITRA release annotations, and CamHands saved by this pipeline's run store.

A VITRA-1M episode (`.npy`, or the lossless `.npz` + `.json` pair) already stores camera-space hands in
the conventions of `records.CamHand`: `global_orient_camspace`, `hand_pose` (right-hand form for both
hands), `joints_camspace` (OpenPose order, so the wrist joint is `joints_camspace[:, 0]`), `beta` and
`kept_frames`. The release has no detection confidence: kept frames get score 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess import store
from preprocess.errors import HandsFileError
from preprocess.records import HANDS, CamHand, CamHands, Intrinsics
from vitra_jax.handspace.episode import load_vitra_npy

RELEASE = "vitra_release"


class PrecomputedError(HandsFileError):
    """A precomputed hands file that is missing, of an unknown kind, or does not cover the clip."""


def from_vitra(d: dict, version: str = "VITRA-1M") -> CamHands:
    """CamHands of a VITRA episode dict ({'left': {...}, 'right': {...}} with the release's field names)."""
    hands = {}
    for h in HANDS:
        try:
            joints = np.asarray(d[h]["joints_camspace"], np.float64)
            kept = np.asarray(d[h]["kept_frames"]).astype(bool)
            hands[h] = CamHand(kept=kept, wrist=joints[:, 0].copy(),
                               orient=np.asarray(d[h]["global_orient_camspace"], np.float64),
                               hand_pose=np.asarray(d[h]["hand_pose"], np.float64), joints=joints,
                               beta=np.asarray(d[h]["beta"], np.float64), score=kept.astype(np.float64))
        except (KeyError, TypeError, IndexError) as e:
            raise PrecomputedError(f"VITRA annotation lacks {h} hand field {e}") from None
    return CamHands(hands=hands, backend=RELEASE, version=version)


def read_vitra(path: str | Path) -> CamHands:
    """A VITRA episode from its `.npy`, or from the `.npz` (+ `.json`) pair (arrays under 'left/…', 'right/…')."""
    path = Path(path)
    if path.suffix == ".npy":
        return from_vitra(load_vitra_npy(path))
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
        d: dict = {h: {} for h in HANDS}
        for key in z.files:
            hand, _, field = key.partition("/")
            if hand in d:
                d[hand][field] = z[key]
    return from_vitra(d)


def read_store_record(path: str | Path) -> CamHands:
    """CamHands saved by `preprocess.store` (`{key}.arrays.npz` + `{key}.record.json`); any of the two or the key."""
    path = str(path)
    for suffix in (".arrays.npz", ".record.json", ".done"):
        path = path.removesuffix(suffix)
    arrays, record = Path(path + ".arrays.npz"), Path(path + ".record.json")
    if not (arrays.is_file() and record.is_file()):
        raise PrecomputedError(f"no stored result at {path} (expected {arrays.name} and {record.name})")
    cam = store.loads(arrays.read_bytes(), record.read_bytes())
    if not isinstance(cam, CamHands):
        raise PrecomputedError(f"{path} holds a {type(cam).__name__}, not CamHands")
    return cam


def read_hands(path: str | Path) -> CamHands:
    """Any supported file: a VITRA `.npy` / `.npz`, or a stored CamHands result."""
    name = str(path)
    if name.endswith((".arrays.npz", ".record.json")):
        return read_store_record(path)
    if name.endswith((".npy", ".npz")):
        if not Path(path).is_file():
            raise PrecomputedError(f"precomputed hands file not found: {path}")
        return read_vitra(path)
    raise PrecomputedError(f"unknown precomputed hands file {path}: expected a VITRA .npy/.npz or a stored result")


def slice_frames(cam: CamHands, start: int, stop: int) -> CamHands:
    """Frames [start, stop) of every hand (beta is per hand, kept as is)."""
    n = len(next(iter(cam.hands.values())).kept)
    if not 0 <= start <= stop <= n:
        raise PrecomputedError(f"frames [{start}, {stop}) are outside the {n} precomputed frames")
    hands = {h: CamHand(kept=c.kept[start:stop], wrist=c.wrist[start:stop], orient=c.orient[start:stop],
                        hand_pose=c.hand_pose[start:stop], joints=c.joints[start:stop], beta=c.beta,
                        score=c.score[start:stop]) for h, c in cam.hands.items()}
    return CamHands(hands=hands, backend=cam.backend, version=cam.version)


class PrecomputedBackend:
    """`HandBackend` replaying a file: `estimate` returns frames [start, start + len(frames)) of it."""

    name = "precomputed"

    def __init__(self, path: str | Path, start: int = 0):
        self.path, self.start = Path(path), start
        self._cam = read_hands(path)
        self.version = f"{self._cam.backend}:{self._cam.version}"

    def estimate(self, frames: np.ndarray, intrinsics: Intrinsics) -> CamHands:
        return slice_frames(self._cam, self.start, self.start + len(frames))
