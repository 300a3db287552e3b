"""Decode only the needed frames of a video with OpenCV, resized to a short side."""

from __future__ import annotations

import os

import cv2
import numpy as np

from vitra_jax.handspace.episode import EpisodeError
from vitra_jax.handspace.geometry import short_side_size


def read_frames(path: str, frame_index: np.ndarray, short_side: int) -> np.ndarray:
    """RGB frames (T, H, W, 3) uint8 at `frame_index` (sorted or not), resized so min(H, W) = short_side."""
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
                h, w = bgr.shape[:2]
                size = short_side_size(w, h, short_side)
                small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
                frames[i] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    return np.stack([frames[int(i)] for i in frame_index])
