"""Decode only the needed frames of a video with OpenCV, resized to a short side; seeks are verified.

A video may also be stored as consecutive parts `{video}_part1.mp4`, `{video}_part2.mp4`, … of `clip_len`
frames each (the release's optional layout for faster seeking); `read_frames_from_parts` reads those."""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np
from absl import logging

from vitra_jax.handspace.episode import EpisodeError
from vitra_jax.handspace.geometry import short_side_size


def center_crop(image: np.ndarray, fraction: float) -> np.ndarray:
    """The centred window keeping `fraction` of each side."""
    h, w = image.shape[:2]
    ch, cw = int(round(h * fraction)), int(round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


Transform = Callable[[np.ndarray], np.ndarray]  # applied to each full-size BGR frame before resizing


# Matroska (webm/mkv) seeks in OpenCV land on frames numbered from timestamps, which drift from the decode
# order the annotations count in (variable frame rate, timestamp gaps); VITRA-1M's Matroska videos are short
# SSv2 clips, so they are decoded from the start.
SEQUENTIAL_SUFFIXES = (".webm", ".mkv")


def container_info(path: str) -> tuple[int, int, int]:
    """(width, height, frame count) as the container reports them."""
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise EpisodeError("unreadable_video", path)
        return tuple(int(cap.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT,
                                                cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def read_frames(path: str, frame_index: np.ndarray, short_side: int, transform: Transform | None = None,
                seek: bool | None = None) -> np.ndarray:
    """RGB frames (T, H, W, 3) uint8 at `frame_index` (sorted or not), passed through `transform` (e.g.
    undistortion, centre crop), then resized so min(H, W) = short_side.

    Frame i is the i-th decoded frame. With `seek` (default: all but webm/mkv) the reader jumps to the first
    wanted frame and verifies where it landed (the reported position, and the landed frame's timestamp
    against i/fps); a seek that missed falls back to decoding from the start.
    """
    if not os.path.isfile(path):
        raise EpisodeError("missing_video", path)
    wanted = sorted(set(int(i) for i in frame_index))
    if seek is None:
        seek = os.path.splitext(path)[1].lower() not in SEQUENTIAL_SUFFIXES
    frames = None
    if seek and wanted[0] > 0:
        frames = _decode(path, wanted, short_side, transform, start=wanted[0])
    if frames is None:
        frames = _decode(path, wanted, short_side, transform, start=0)
    return np.stack([frames[int(i)] for i in frame_index])


def _decode(path: str, wanted: list[int], short_side: int, transform: Transform | None,
            start: int) -> dict[int, np.ndarray] | None:
    """Frames `wanted` (sorted) decoded from `start` on (a seek when > 0); None if the seek missed."""
    first, last = wanted[0], wanted[-1]
    keep = set(wanted)
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise EpisodeError("unreadable_video", path)
        if start > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
            landed = cap.get(cv2.CAP_PROP_POS_FRAMES)
            if landed != start:
                logging.warning("%s: seek to frame %d landed on %s; decoding from the start", path, start, landed)
                return None
        frames: dict[int, np.ndarray] = {}
        for i in range(start, last + 1):
            if not cap.grab():
                raise EpisodeError("unreadable_video", f"{path}: frame {i} of {first}..{last} missing")
            if i == start > 0 and not _timestamp_matches(cap, i):
                logging.warning("%s: seek to frame %d landed at %.1f ms; decoding from the start", path, start,
                                cap.get(cv2.CAP_PROP_POS_MSEC))
                return None
            if i in keep:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise EpisodeError("unreadable_video", f"{path}: frame {i} does not decode")
                if transform is not None:
                    bgr = transform(bgr)
                h, w = bgr.shape[:2]
                small = cv2.resize(bgr, short_side_size(w, h, short_side), interpolation=cv2.INTER_AREA)
                frames[i] = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        return frames
    except cv2.error as e:
        raise EpisodeError("unreadable_video", f"{path}: OpenCV: {e}") from None
    finally:
        cap.release()


def _timestamp_matches(cap: cv2.VideoCapture, i: int) -> bool:
    """Whether the frame just grabbed has the timestamp of frame i at a constant frame rate (± half a frame);
    True when the backend reports no frame rate."""
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not fps or fps <= 0:
        return True
    return abs(cap.get(cv2.CAP_PROP_POS_MSEC) - 1000.0 * i / fps) <= 500.0 / fps


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
