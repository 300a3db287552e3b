"""Pictures people look at: wrist trajectories drawn on frames, and loss curves (numpy + OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from vitra_jax.handspace import geometry, layout

# RGB colours.
GROUND_TRUTH = (40, 200, 40)
PREDICTION = (230, 60, 200)


def upscale(image: np.ndarray, intrinsics: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Enlarge a small frame `scale`× (nearest) for drawing; returns the image and its scaled intrinsics."""
    h, w = image.shape[:2]
    k = np.asarray(intrinsics, np.float64).copy()
    k[:2] *= scale
    big = cv2.resize(np.ascontiguousarray(image), (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    return big, k


def draw_wrist_paths(image: np.ndarray, intrinsics: np.ndarray, states: np.ndarray, mask: np.ndarray,
                     colour: tuple[int, int, int]) -> np.ndarray:
    """Draw, in place, the wrist paths of (S, 102) camera-frame states on an RGB image with `intrinsics`.

    `mask` (S, 2) marks which hands are valid at each step; a path runs through valid steps only and ends
    in a filled dot (the last position)."""
    for i, hand in enumerate(layout.HANDS):
        pts = states[np.asarray(mask)[:, i].astype(bool), layout.hand_part(hand, layout.TRANS)]
        pts = pts[pts[:, 2] > 1e-3]  # on or behind the camera plane: not drawable
        if len(pts) < 2:
            continue
        uv = np.round(geometry.project(pts, intrinsics)).astype(np.int32)
        cv2.polylines(image, [uv.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        cv2.circle(image, tuple(int(c) for c in uv[-1]), 4, colour, -1, cv2.LINE_AA)
    return image


def loss_curve(losses: np.ndarray, size: tuple[int, int] = (480, 240)) -> np.ndarray:
    """An RGB picture of a loss curve on a log scale, with the first and last values written on it."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    y = np.log10(np.maximum(np.asarray(losses, np.float64), 1e-12))
    lo, hi = y.min(), max(y.max(), y.min() + 1e-6)
    xs = np.linspace(30, w - 10, len(y))
    ys = h - 20 - (y - lo) / (hi - lo) * (h - 40)
    cv2.polylines(img, [np.stack([xs, ys], -1).round().astype(np.int32).reshape(-1, 1, 2)], False,
                  (30, 90, 200), 2, cv2.LINE_AA)
    text = f"loss {losses[0]:.3g} -> {losses[-1]:.3g} ({len(losses)} steps, log scale)"
    cv2.putText(img, text, (30, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def save_rgb(path, image: np.ndarray) -> None:
    """Write an RGB uint8 image (PNG/JPEG by extension)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")
