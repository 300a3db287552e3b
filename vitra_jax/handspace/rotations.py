"""Rotation conversions used by every stage: matrices, axis-angle and Euler 'xyz' (numpy + scipy only).

Euler angles are scipy's lowercase 'xyz' (extrinsic x, then y, then z, radians), as in the VITRA release
(VITRA §III-A; official `dataset_utils.py`). All functions accept leading batch axes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

EULER_ORDER = "xyz"


def _batched(fn, x: np.ndarray, tail: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    lead = x.shape[: x.ndim - tail]
    flat = x.reshape((-1,) + x.shape[x.ndim - tail :])
    out = fn(flat)
    return out.reshape(lead + out.shape[1:])


def matrix_to_euler(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) Euler 'xyz' angles."""
    return _batched(lambda f: Rotation.from_matrix(f).as_euler(EULER_ORDER), m, 2)


def euler_to_matrix(e: np.ndarray) -> np.ndarray:
    """(..., 3) Euler 'xyz' angles -> (..., 3, 3) rotation matrices."""
    return _batched(lambda f: Rotation.from_euler(EULER_ORDER, f).as_matrix(), e, 1)


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle (rotation vectors)."""
    return _batched(lambda f: Rotation.from_matrix(f).as_rotvec(), m, 2)


def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle (rotation vectors) -> (..., 3, 3) rotation matrices."""
    return _batched(lambda f: Rotation.from_rotvec(f).as_matrix(), v, 1)


def relative_rotation(r_from: np.ndarray, r_to: np.ndarray) -> np.ndarray:
    """Left-multiplied delta R_Δ with R_to = R_Δ · R_from, i.e. R_to · R_fromᵀ (..., 3, 3)."""
    return np.asarray(r_to) @ np.swapaxes(np.asarray(r_from), -1, -2)


def is_rotation(m: np.ndarray, atol: float = 1e-4) -> np.ndarray:
    """Whether each (..., 3, 3) matrix is orthonormal with determinant +1."""
    m = np.asarray(m, dtype=np.float64)
    eye = np.eye(3)
    ortho = np.abs(m @ np.swapaxes(m, -1, -2) - eye).max(axis=(-1, -2)) < atol
    return ortho & (np.abs(np.linalg.det(m) - 1.0) < atol)
