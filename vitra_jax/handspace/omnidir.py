"""The unified omnidirectional (Mei) camera model of raw Ego4D videos, and undistortion to a pinhole camera.

VITRA-1M ships, per raw Ego4D video, `intrinsics/{video_name}.npy`: a pickled dict
`{"intrinsics_ori": {"K", "D", "xi"}, "intrinsics_new": {"K"}}` estimated by DroidCalib. The annotation's
intrinsics describe the *undistorted* video: same size, pinhole `intrinsics_new.K`. A point X in camera
coordinates lands in the raw video at

    s = X / |X|;  m = (s_x, s_y) / (s_z + xi);  m_d = radial-tangential(m; k1, k2, p1, p2);  u = K [m_d, 1]

(OpenCV `omnidir`'s model, skew K[0, 1] included). `undistort_maps` inverts it per output pixel, which is
what `cv2.omnidir.initUndistortRectifyMap(..., RECTIFY_PERSPECTIVE)` computes; the release only undistorts
when xi > 0, and so does `needs_undistortion`.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np

from .episode import EpisodeError, load_vitra_npy


@dataclasses.dataclass(frozen=True)
class OmnidirIntrinsics:
    k: np.ndarray        # (3, 3) raw camera matrix
    d: np.ndarray        # (4,) k1, k2, p1, p2
    xi: float
    new_k: np.ndarray    # (3, 3) pinhole matrix of the undistorted video

    @property
    def needs_undistortion(self) -> bool:
        return self.xi > 0


def load_intrinsics(path: str | Path) -> OmnidirIntrinsics:
    """A released `intrinsics/{video_name}.npy` (read with the arrays-only unpickler)."""
    try:
        d = load_vitra_npy(path)
        ori, new = d["intrinsics_ori"], d["intrinsics_new"]
        cam = OmnidirIntrinsics(k=np.asarray(ori["K"], np.float64).reshape(3, 3),
                                d=np.asarray(ori["D"], np.float64).reshape(4),
                                xi=float(np.asarray(ori["xi"]).reshape(())),
                                new_k=np.asarray(new["K"], np.float64).reshape(3, 3))
    except FileNotFoundError:
        raise EpisodeError("missing_intrinsics", str(path)) from None
    except (KeyError, TypeError, ValueError, pickle.UnpicklingError) as e:
        raise EpisodeError("bad_intrinsics", f"{path}: {type(e).__name__}: {e}") from None
    if not all(np.isfinite(a).all() for a in (cam.k, cam.d, cam.new_k)) or not np.isfinite(cam.xi):
        raise EpisodeError("bad_intrinsics", f"{path}: non-finite values")
    return cam


def distort_normalized(m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Radial (k1, k2) + tangential (p1, p2) distortion of normalized points (..., 2)."""
    k1, k2, p1, p2 = d
    x, y = m[..., 0], m[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = radial * x + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = radial * y + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], -1)


def project(points_cam: np.ndarray, cam: OmnidirIntrinsics) -> np.ndarray:
    """Raw-video pixels (..., 2) of camera-frame points (..., 3) under the Mei model."""
    s = points_cam / np.linalg.norm(points_cam, axis=-1, keepdims=True)
    m = s[..., :2] / (s[..., 2:3] + cam.xi)
    md = distort_normalized(m, cam.d)
    k = cam.k
    u = k[0, 0] * md[..., 0] + k[0, 1] * md[..., 1] + k[0, 2]
    v = k[1, 1] * md[..., 1] + k[1, 2]
    return np.stack([u, v], -1)


def undistort_maps(cam: OmnidirIntrinsics, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (H, W) maps for `cv2.remap`: the raw-video pixel seen by each pixel of the undistorted
    (pinhole `new_k`, width × height) image."""
    j, i = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    rays = np.stack([j, i, np.ones_like(j)], -1) @ np.linalg.inv(cam.new_k).T
    uv = project(rays, cam)
    return uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32)
