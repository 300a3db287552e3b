"""Lift metric hand landmarks to the camera frame with PnP (OpenCV SQPnP).

MediaPipe gives each hand twice: pixel landmarks, and metric 3D "world" landmarks about the hand's centre
in an unknown frame. The rigid motion that projects the metric shape onto the pixels (K known) places the
21 points in camera space; their depth comes from the hand's metric size, so its error grows with distance.
"""

from __future__ import annotations

import cv2
import numpy as np


def pnp_lift(world: np.ndarray, pixels: np.ndarray, k: np.ndarray, max_reprojection_px: float = 12.0,
             ) -> tuple[np.ndarray, bool, float]:
    """Camera-space points (21, 3), whether the lift is usable, and the median reprojection error (px).

    world (21, 3) metric landmarks, pixels (21, 2), k (3, 3). Unusable: no solution, a point behind the
    camera, or a median reprojection error above `max_reprojection_px`.
    """
    world = np.ascontiguousarray(world, np.float64).reshape(-1, 1, 3)
    pixels = np.ascontiguousarray(pixels, np.float64).reshape(-1, 1, 2)
    try:
        ok, rvec, tvec = cv2.solvePnP(world, pixels, np.asarray(k, np.float64), None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:
        ok = False
    if not ok:
        return np.full((world.shape[0], 3), np.nan), False, float("inf")
    rot, _ = cv2.Rodrigues(rvec)
    cam = world[:, 0] @ rot.T + tvec.reshape(1, 3)
    proj = cam @ np.asarray(k, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.linalg.norm(proj[:, :2] / proj[:, 2:3] - pixels[:, 0], axis=-1)
    median = float(np.median(err))
    usable = bool((cam[:, 2] > 0).all() and np.isfinite(median) and median <= max_reprojection_px)
    return cam, usable, median
