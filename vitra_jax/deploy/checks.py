"""What a deployed policy accepts as an observation's image and field of view: numpy-only checks shared by
the in-process policy (`runner`) and the server, each answering None or what is wrong."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def image_problem(image: Any, max_side: int | None = None) -> str | None:
    """An RGB frame must be a uint8 (H, W, 3) array with sides >= 1 (and <= max_side)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = image.shape if isinstance(image, np.ndarray) else type(image).__name__
        return f"image must be a uint8 array of shape (H, W, 3), got {shape}"
    if image.dtype != np.uint8:
        return f"image must be uint8 RGB, got dtype {image.dtype}"
    if min(image.shape[:2]) < 1 or (max_side is not None and max(image.shape[:2]) > max_side):
        return f"image sides must be in [1, {max_side or 'any'}], got {image.shape[:2]}"
    return None


def fov_problem(fov: Any) -> str | None:
    """(fov_x, fov_y) in radians, each in (0, π): degrees (e.g. [60, 50]) are refused, not misread."""
    v = np.asarray(fov, np.float64)
    if v.shape != (2,) or not np.all(np.isfinite(v)) or not np.all((v > 0) & (v < math.pi)):
        return f"fov must be (fov_x, fov_y) in radians, each in (0, π), got {v.tolist() if v.size < 5 else v.shape}"
    return None
