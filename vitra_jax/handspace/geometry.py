"""World↔camera transforms, pinhole projection and intrinsics rescaling (numpy only).

Extrinsics are world→camera 4×4 matrices, as in the VITRA release: x_cam = R_w2c · x_world + t_w2c.
Released intrinsics belong to the undistorted original video; images stored at another size use them
normalised by (2cx, 2cy) and scaled by the new width/height (official `compute_new_intrinsics_resize`).
"""

from __future__ import annotations

import numpy as np


def split_extrinsics(w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 4, 4) world→camera -> rotation (..., 3, 3), translation (..., 3)."""
    w2c = np.asarray(w2c, dtype=np.float64)
    return w2c[..., :3, :3], w2c[..., :3, 3]


def world_to_camera_points(points: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """Points (..., 3) in world -> camera frame of a single (4, 4) world→camera matrix."""
    r, t = split_extrinsics(w2c)
    return np.asarray(points, dtype=np.float64) @ r.T + t


def camera_to_world_points(points: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """Points (..., 3) in the camera frame of one (4, 4) world→camera matrix -> world frame."""
    r, t = split_extrinsics(w2c)
    return (np.asarray(points, dtype=np.float64) - t) @ r


def world_to_camera_rotation(rot: np.ndarray, w2c: np.ndarray) -> np.ndarray:
    """Orientations (..., 3, 3) in world -> camera frame of one (4, 4) world→camera matrix."""
    r, _ = split_extrinsics(w2c)
    return r @ np.asarray(rot, dtype=np.float64)


def invert_extrinsics(w2c: np.ndarray) -> np.ndarray:
    """(..., 4, 4) world→camera -> camera→world."""
    r, t = split_extrinsics(w2c)
    out = np.zeros(r.shape[:-2] + (4, 4))
    rt = np.swapaxes(r, -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ t[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def project(points_cam: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3) -> pixel coordinates (..., 2) with intrinsics k (3, 3)."""
    p = np.asarray(points_cam, dtype=np.float64) @ np.asarray(k, dtype=np.float64).T
    return p[..., :2] / p[..., 2:3]


def resize_intrinsics(k: np.ndarray, width: int, height: int) -> np.ndarray:
    """Release intrinsics -> intrinsics of the same view stored at width × height pixels."""
    k = np.asarray(k, dtype=np.float64).copy()
    k[0] *= width / (2.0 * k[0, 2])
    k[1] *= height / (2.0 * k[1, 2])
    return k


def center_crop_intrinsics(k: np.ndarray, fraction: float) -> np.ndarray:
    """Intrinsics of the centred crop keeping `fraction` of each side of the image (size 2cx × 2cy) that `k`
    describes; pixels stay the same size, the principal point moves. Followed by `resize_intrinsics`, this
    equals the release's `compute_new_intrinsics_crop` for EgoExo4D."""
    k = np.asarray(k, dtype=np.float64).copy()
    k[0, 2] -= (1.0 - fraction) * k[0, 2]
    k[1, 2] -= (1.0 - fraction) * k[1, 2]
    return k


def fov_from_intrinsics(k: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Horizontal and vertical field of view (radians) of a width × height image."""
    return (float(2 * np.arctan(width / (2 * k[0, 0]))), float(2 * np.arctan(height / (2 * k[1, 1]))))


def short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side equals `short_side` (aspect kept, rounded)."""
    scale = short_side / min(width, height)
    return int(round(width * scale)), int(round(height * scale))
