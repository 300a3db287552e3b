"""Video decoding, the split of long videos into overlapping clips, and the recombination of per-clip results.

Decoding uses OpenCV's FFmpeg backend (no ffmpeg binary needed). Clips are `clip_seconds` long and
neighbours share `overlap_seconds` (VITRA §III: long videos are labelled as 20 s clips and recombined);
`stitch` takes every overlapped frame from the clip whose centre is nearest, ties to the earlier clip, so
recombination is deterministic and each frame comes from the clip that saw the most context around it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from preprocess.errors import StageError
from preprocess.records import Clip, VideoInfo


class VideoError(StageError):
    """A video that cannot be used."""


def _open(path: str | Path) -> cv2.VideoCapture:
    path = str(path)
    if not os.path.isfile(path):
        raise VideoError("missing_video", f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise VideoError("unreadable_video", f"{path}: empty file (0 bytes)")
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError("unreadable_video", f"{path}: not a video FFmpeg can open (no video stream or bad data)")
    return cap


def probe(path: str | Path) -> VideoInfo:
    """Frame rate, size and frame count of a video; VideoError if it cannot be decoded.

    The container's frame count is trusted only when its last frame decodes and no frame follows;
    otherwise frames are counted by decoding.
    """
    cap = _open(path)
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, _ = cap.read()
        if not ok or width <= 0 or height <= 0:
            raise VideoError("unreadable_video", f"{path}: no decodable video frame")
        if count > 1:  # containers may estimate the count from the duration: check the last frame exists
            cap.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
            if not cap.grab() or cap.grab():
                count = 0
        if count <= 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            count = 0
            while cap.grab():
                count += 1
    finally:
        cap.release()
    if not (fps > 0 and math.isfinite(fps)):
        raise VideoError("unreadable_video", f"{path}: frame rate {fps} is not positive")
    return VideoInfo(path=str(path), video_id=Path(path).stem, fps=fps, width=width, height=height,
                     num_frames=count)


def output_size(width: int, height: int, max_width: int | None) -> tuple[int, int]:
    """(width, height) after scaling down to at most `max_width` pixels wide (aspect kept, even rounding)."""
    if max_width is None or width <= max_width:
        return width, height
    return max_width, max(1, int(round(height * max_width / width)))


def read_frames(path: str | Path, start: int, stop: int, *, max_width: int | None = None) -> np.ndarray:
    """Frames [start, stop) as (T, H, W, 3) uint8 RGB, scaled down (area filter) to at most `max_width`."""
    if not 0 <= start < stop:
        raise ValueError(f"frame range [{start}, {stop}) is empty or negative")
    cap = _open(path)
    frames = []
    try:
        if start > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        for _ in range(stop - start):
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            size = output_size(w, h, max_width)
            if size != (w, h):
                bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if len(frames) != stop - start:
        raise VideoError("truncated_video", f"{path}: decoded {len(frames)} of frames [{start}, {stop})")
    return np.stack(frames)


def plan_clips(info: VideoInfo, clip_seconds: float = 20.0, overlap_seconds: float = 2.0) -> list[Clip]:
    """Clips of round(clip_seconds·fps) frames stepping by clip − overlap frames; the last one ends at the
    video's end (it may be shorter but still overlaps its neighbour fully). A video shorter than one clip is
    one clip."""
    clip_len = max(1, round(clip_seconds * info.fps))
    overlap = round(overlap_seconds * info.fps)
    if not 0 <= overlap < clip_len:
        raise ValueError(f"overlap {overlap_seconds} s must be >= 0 and shorter than the clip ({clip_seconds} s)")
    if info.num_frames <= 0:
        raise VideoError("empty_video", f"{info.path}: no frames")
    clips, start = [], 0
    while True:
        stop = min(start + clip_len, info.num_frames)
        clips.append(Clip(video_id=info.video_id, index=len(clips), start=start, stop=stop))
        if stop == info.num_frames:
            return clips
        start += clip_len - overlap


def ownership(clips: Sequence[Clip]) -> list[tuple[int, int]]:
    """Per clip, the video frames [a, b) it provides after recombination (nearest clip centre, ties to the
    earlier clip). Clips must be ordered, contiguous or overlapping, each overlapping only its neighbours."""
    if not clips:
        raise ValueError("no clips")
    for prev, cur in zip(clips, clips[1:]):
        if not prev.start < cur.start <= prev.stop <= cur.stop:
            raise ValueError(f"clips {prev.name} [{prev.start}, {prev.stop}) and {cur.name} "
                             f"[{cur.start}, {cur.stop}) are not ordered, contiguous neighbours")
    bounds = [clips[0].start]
    for prev, cur in zip(clips, clips[1:]):
        # centre c = (start + stop − 1) / 2; frame f goes to `prev` iff f <= (c_prev + c_cur) / 2 = s / 4
        s = prev.start + prev.stop - 1 + cur.start + cur.stop - 1
        bounds.append(min(max(s // 4 + 1, cur.start), prev.stop))
    bounds.append(clips[-1].stop)
    if any(b < a for a, b in zip(bounds, bounds[1:])):
        raise ValueError("clips overlap beyond their neighbours; cannot recombine")
    return list(zip(bounds[:-1], bounds[1:]))


def stitch(clips: Sequence[Clip], per_clip_values: Sequence[np.ndarray]) -> np.ndarray:
    """Per-frame arrays of each clip (leading axis = clip frames) -> one array over the frames the clips
    cover, each overlapped frame taken from the clip whose centre is nearest (ties to the earlier clip)."""
    if len(clips) != len(per_clip_values):
        raise ValueError(f"{len(clips)} clips but {len(per_clip_values)} value arrays")
    parts = []
    for clip, values, (a, b) in zip(clips, per_clip_values, ownership(clips)):
        values = np.asarray(values)
        if len(values) != len(clip):
            raise ValueError(f"{clip.name} has {len(clip)} frames but {len(values)} values")
        parts.append(values[a - clip.start:b - clip.start])
    return np.concatenate(parts, axis=0)
