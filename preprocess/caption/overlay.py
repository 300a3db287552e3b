"""Frames with the palm's future trajectory drawn on them: what the captioning model sees (VITRA §III).

For each of 8 frames sampled evenly over a segment, the palm (mean of the OpenPose joints
`handspace.mano.PALM_JOINTS`) of every tracked frame from that frame to the segment's end is expressed in
*that* frame's camera and projected with its intrinsics, so the path shows where the hand is about to go
as seen from now. The path is a polyline whose colour runs blue → green → red from now to the end, with a
blue dot on the palm's current position (the prompt refers to it).

Frames are RGB uint8; frame indices of the segment, the track, the extrinsics and `frames` are the same
numbering (frames[i] shows frame i).
"""

from __future__ import annotations

import cv2
import numpy as np

from preprocess.records import Segment
from vitra_jax.handspace import geometry, mano
from vitra_jax.handspace.trajectory import HandTrack

NUM_FRAMES = 8
ALPHA = 0.7  # opacity of the drawing over the frame
MIN_DEPTH = 1e-3  # metres; palm positions closer to (or behind) the camera plane are not drawn
RAMP = np.array([[0, 0, 255], [0, 255, 0], [255, 0, 0]], np.float64)  # RGB blue, green, red


def palm_positions(track: HandTrack) -> np.ndarray:
    """(T, 3) palm centre per frame: mean of the palm joints, same frame as `track.joints`."""
    return np.asarray(track.joints, np.float64)[:, list(mano.PALM_JOINTS)].mean(axis=1)


def sample_frames(start: int, stop: int, num: int = NUM_FRAMES) -> np.ndarray:
    """`num` frame indices spread evenly over [start, stop) (repeats when the segment is shorter)."""
    return start + np.linspace(0, stop - start - 1, num, dtype=int)


def future_path(palm_world: np.ndarray, kept: np.ndarray, extrinsics: np.ndarray, k: np.ndarray,
                frame: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (M, 2) of the palm at frames frame..stop-1 seen from camera `frame`, and which are drawable
    (M,) (tracked and in front of the camera)."""
    cam = geometry.world_to_camera_points(palm_world[frame:stop], extrinsics[frame])
    valid = np.asarray(kept[frame:stop], bool) & (cam[:, 2] > MIN_DEPTH)
    uv = geometry.project(np.where(valid[:, None], cam, [0.0, 0.0, 1.0]), k)  # undrawable: any finite value
    return uv, valid


def ramp_colour(s: float) -> tuple[int, int, int]:
    """RGB colour at s ∈ [0, 1] along blue → green → red."""
    x = float(np.clip(s, 0.0, 1.0)) * (len(RAMP) - 1)
    i = min(int(x), len(RAMP) - 2)
    c = RAMP[i] + (x - i) * (RAMP[i + 1] - RAMP[i])
    return tuple(int(round(v)) for v in c)


def line_width(height: int, width: int) -> int:
    return max(2, round(min(height, width) / 120))


def clip_segment(a: np.ndarray, b: np.ndarray, lo: float, hi_x: float, hi_y: float):
    """The part of segment a→b inside the box [lo, hi_x] × [lo, hi_y] (Liang–Barsky), or None."""
    d = b - a
    t0, t1 = 0.0, 1.0
    for p, q in ((-d[0], a[0] - lo), (d[0], hi_x - a[0]), (-d[1], a[1] - lo), (d[1], hi_y - a[1])):
        if p == 0:
            if q < 0:
                return None
        elif p < 0:
            t0 = max(t0, q / p)
        else:
            t1 = min(t1, q / p)
    return (a + t0 * d, a + t1 * d) if t0 <= t1 else None


def draw_path(image: np.ndarray, uv: np.ndarray, valid: np.ndarray, *, alpha: float = ALPHA) -> np.ndarray:
    """A copy of `image` with the path drawn: consecutive drawable points joined, a gap where a point is
    not drawable, and a blue dot on the first point when it is drawable. Pixels off the drawing are unchanged."""
    h, w = image.shape[:2]
    thick = line_width(h, w)
    layer = np.ascontiguousarray(image).copy()
    mask = np.zeros((h, w), np.uint8)
    margin = 4 * thick  # segments are clipped just outside the image, keeping cv2's fixed-point ints small
    n = len(uv)

    def fixed(p):  # 4 bits of sub-pixel precision (shift=4)
        return tuple(int(v) for v in np.round(np.asarray(p) * 16))

    for i in range(n - 1):
        part = clip_segment(uv[i], uv[i + 1], -margin, w + margin, h + margin) if valid[i] and valid[i + 1] else None
        if part is None:
            continue
        colour = ramp_colour(i / max(n - 2, 1))
        cv2.line(layer, fixed(part[0]), fixed(part[1]), colour, thick, cv2.LINE_AA, shift=4)
        cv2.line(mask, fixed(part[0]), fixed(part[1]), 255, thick, cv2.LINE_AA, shift=4)
    if n and valid[0] and np.all(np.abs(uv[0]) < 4 * max(h, w)):
        centre = fixed(uv[0])
        cv2.circle(layer, centre, 16 * (thick + 2), (0, 0, 255), -1, cv2.LINE_AA, shift=4)
        cv2.circle(mask, centre, 16 * (thick + 2), 255, -1, cv2.LINE_AA, shift=4)
    weight = (alpha * mask.astype(np.float64) / 255.0)[..., None]
    out = image.astype(np.float64) * (1.0 - weight) + layer.astype(np.float64) * weight
    return np.where(mask[..., None] > 0, np.round(out), image).astype(np.uint8)


def _check(frames: np.ndarray, segment: Segment, track: HandTrack, extrinsics: np.ndarray, k: np.ndarray):
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    n = len(frames)
    if len(track) != n or np.shape(extrinsics) != (n, 4, 4):
        raise ValueError(f"{n} frames but a track of {len(track)} frames and extrinsics {np.shape(extrinsics)}")
    if np.shape(k) != (3, 3):
        raise ValueError(f"intrinsics must be (3, 3), got {np.shape(k)}")
    if not 0 <= segment.start < segment.stop <= n:
        raise ValueError(f"segment [{segment.start}, {segment.stop}) outside the {n} frames given")


def overlay_frames(frames: np.ndarray, segment: Segment, world_track: HandTrack, extrinsics: np.ndarray,
                   k: np.ndarray, *, num_frames: int = NUM_FRAMES) -> list[tuple[int, np.ndarray]]:
    """(frame index, frame with the future palm path drawn) for `num_frames` frames sampled evenly over the
    segment. `k` is the pinhole intrinsics of `frames` (their pixels); extrinsics are world→camera."""
    frames = np.asarray(frames)
    _check(frames, segment, world_track, extrinsics, k)
    palm = palm_positions(world_track)
    out = []
    for t in sample_frames(segment.start, segment.stop, num_frames):
        uv, valid = future_path(palm, world_track.kept, extrinsics, k, int(t), segment.stop)
        out.append((int(t), draw_path(frames[t], uv, valid)))
    return out
