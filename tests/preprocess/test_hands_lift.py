"""PnP lifting: a known hand shape seen by a known camera comes back in camera space."""

import numpy as np
from scipy.spatial.transform import Rotation

from preprocess.hands.lift import pnp_lift
from vitra_jax.handspace.mano import REST_JOINTS

K = np.array([[218.3, 0.0, 240.0], [0.0, 223.2, 184.0], [0.0, 0.0, 1.0]])


def _view(rot, t):
    shape = REST_JOINTS - REST_JOINTS.mean(0)  # metric landmarks about the hand centre, like MediaPipe's
    cam = shape @ rot.T + t
    uv = cam @ K.T
    return shape, cam, uv[:, :2] / uv[:, 2:]


def test_pnp_recovers_camera_space_points():
    rot = Rotation.from_rotvec([0.4, -1.1, 0.3]).as_matrix()
    shape, cam, pixels = _view(rot, np.array([0.05, 0.1, 0.45]))
    got, ok, err = pnp_lift(shape, pixels + np.random.default_rng(0).normal(0, 0.3, pixels.shape), K)
    assert ok and err < 1.0
    assert np.linalg.norm(got - cam, axis=-1).max() < 0.01  # 0.3 px noise at 45 cm: sub-centimetre


def test_pnp_rejects_inconsistent_landmarks():
    rot = Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix()
    shape, _, pixels = _view(rot, np.array([0.0, 0.0, 0.4]))
    scrambled = pixels[np.random.default_rng(1).permutation(21)]  # the 2D points belong to other landmarks
    _, ok, err = pnp_lift(shape, scrambled, K, max_reprojection_px=12.0)
    assert not ok and err > 12.0
