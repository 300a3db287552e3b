"""Decode only the needed frames of a video with OpenCV, resized to a short side.

A video may also be stored as consecutive parts `{video}_part1.mp4`, `{video}_part2.mp4`, … of `clip_len`
frames each (the release's optional layout for faster seeking); `read_frames_from_parts` reads those."""

from __future__ import annotations

import os
from typing import Callable

import cv2
import numpy as np

from vitra_jax.handspace.episode import EpisodeError
from vitra_jax.handspace.geometry import short_side_size


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The centred window keeping `fraction` of each side."""
    h, w = image.shape[:2]
    ch, cw = int(round(h * fraction)), int(round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


Transform = Callable[[np.ndarray], np.ndarray]  # applied to each full-size BGR frame before resizing


def read_frames(path: str, frame_index: np.ndarray, short_side: int, transform: Transform | None = None) -> np.ndarray:
    """RGB frames (T, H, W, 3) uint8 at `frame_index` (sorted or not), passed through `transform` (e.g.
    undistortion, centre crop), then resized so min(H, W) = short_side."""
    if not os.path.isfile(path):
        raise EpisodeError("missing_video", path)
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise EpisodeError("unreadable_video", path)
        wanted = set(int(i) for i in frame_index)
        first, last = min(wanted), max(wanted)
        if first > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, first)
        frames: dict[int, np.ndarray] = {}
        for i in range(first, last + 1):
            if not cap.grab():
                raise EpisodeError("unreadable_video", f"{path}: frame {i} of {first}..{last} missing")
            if i in wanted:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise EpisodeError("unreadable_video", f"{path}: frame {i} does not decode")
                if transform is not None:
                    bgr = transform(bgr)
                h, w = bgr.shape[:2]
                size = short_side_size(w, h, short_side)
                small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                frames[i] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    return np.stack([frames[int(i)] for i in frame_index])


def read_frames_from_parts(parts: list[str], frame_index: np.ndarray, short_side: int,
                           clip_len: int, transform: Transform | None = None) -> np.ndarray:
    """Like `read_frames` for a video split into parts of `clip_len` frames (`parts[k]` holds frames
    k·clip_len … (k+1)·clip_len − 1); an episode may span several parts."""
    frame_index = np.asarray(frame_index, dtype=np.int64)
    part_of = frame_index // clip_len
    if part_of.max() >= len(parts):
        raise EpisodeError("missing_video", f"frame {int(frame_index.max())} needs part {int(part_of.max()) + 1} "
                                            f"of {len(parts)} ({parts[0]} ...)")
    out: list[np.ndarray | None] = [None] * len(frame_index)
    for k in np.unique(part_of):
        rows = np.flatnonzero(part_of == k)
        frames = read_frames(parts[k], frame_index[rows] - k * clip_len, short_side, transform)
        for r, f in zip(rows, frames):
            out[r] = f
    return np.stack(out)
