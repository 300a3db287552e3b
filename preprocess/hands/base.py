"""The interface every camera-space hand backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from preprocess.records import CamHands, Intrinsics


@runtime_checkable
class HandBackend(Protocol):
    """Frames of one clip (T, H, W, 3) uint8 RGB, pinhole intrinsics of those frames -> both hands over T frames."""

    name: str
    version: str

    def estimate(self, frames: np.ndarray, intrinsics: Intrinsics) -> CamHands: ...
