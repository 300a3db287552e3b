"""Rotations, world↔camera geometry and MANO mirroring, checked with known values."""

import numpy as np

from vitra_jax.handspace import geometry, mano, rotations


def test_known_rotations():
    rz90 = rotations.euler_to_matrix(np.array([0.0, 0.0, np.pi / 2]))
    np.testing.assert_allclose(rz90 @ [1.0, 0, 0], [0, 1.0, 0], atol=1e-12)
    np.testing.assert_allclose(rotations.matrix_to_axis_angle(rz90), [0, 0, np.pi / 2], atol=1e-12)
    # Lowercase 'xyz' is extrinsic: R = Rz · Ry · Rx.
    e = np.array([0.3, -0.2, 0.5])
    rx, ry, rz = (rotations.axis_angle_to_matrix(np.eye(3)[i] * e[i]) for i in range(3))
    np.testing.assert_allclose(rotations.euler_to_matrix(e), rz @ ry @ rx, atol=1e-12)


def test_round_trips_batched():
    rng = np.random.default_rng(0)
    e = rng.uniform(-1.2, 1.2, (4, 5, 3))
    m = rotations.euler_to_matrix(e)
    assert m.shape == (4, 5, 3, 3) and rotations.is_rotation(m).all()
    np.testing.assert_allclose(rotations.matrix_to_euler(m), e, atol=1e-12)
    v = rotations.matrix_to_axis_angle(m)
    np.testing.assert_allclose(rotations.axis_angle_to_matrix(v), m, atol=1e-12)
    d = rotations.relative_rotation(m[0], m[1])
    np.testing.assert_allclose(d @ m[0], m[1], atol=1e-12)


def test_world_camera_round_trip_and_projection():
    w2c = np.eye(4)
    w2c[:3, :3] = rotations.euler_to_matrix(np.array([0.1, 0.2, -0.3]))
    w2c[:3, 3] = [0.5, -0.2, 1.0]
    p = np.array([[0.1, 0.2, 0.3], [-1.0, 0.5, 2.0]])
    cam = geometry.world_to_camera_points(p, w2c)
    np.testing.assert_allclose(cam, p @ w2c[:3, :3].T + w2c[:3, 3])
    np.testing.assert_allclose(geometry.camera_to_world_points(cam, w2c), p, atol=1e-12)
    np.testing.assert_allclose(geometry.invert_extrinsics(w2c) @ w2c, np.eye(4), atol=1e-12)
    k = np.array([[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]])
    np.testing.assert_allclose(geometry.project(np.array([0.1, -0.2, 2.0]), k), [69.0, 38.0])


def test_resize_intrinsics_matches_release_fixture_numbers():
    # VITRA example: f=654.97 at 1440x1080 (cx=720, cy=540) shown at 480x368 -> fx=218.3, fy=223.2.
    k = np.array([[654.97, 0, 720.0], [0, 654.97, 540.0], [0, 0, 1]])
    small = geometry.resize_intrinsics(k, 480, 368)
    np.testing.assert_allclose(small[[0, 1, 0, 1], [0, 1, 2, 2]], [218.323, 223.175, 240, 184], atol=0.01)
    fov_x, _ = geometry.fov_from_intrinsics(small, 480, 368)
    assert abs(np.degrees(fov_x) - 95.4) < 0.05
    assert geometry.short_side_size(480, 368, 224) == (292, 224)


def test_mirroring():
    r = rotations.axis_angle_to_matrix(np.array([0.2, 0.4, -0.6]))
    mirrored = rotations.matrix_to_axis_angle(mano.mirror_rotation(r))
    np.testing.assert_allclose(mirrored, [0.2, -0.4, 0.6], atol=1e-12)
    np.testing.assert_allclose(mano.mirror_axis_angle(np.array([0.2, 0.4, -0.6])), [0.2, -0.4, 0.6])
    np.testing.assert_allclose(mano.mirror_points(np.array([1.0, 2.0, 3.0])), [-1.0, 2.0, 3.0])
    # Mirroring a rotated point equals rotating the mirrored point by the mirrored rotation.
    p = np.array([0.3, -0.1, 0.2])
    expected = mano.mirror_rotation(r) @ mano.mirror_points(p)
    np.testing.assert_allclose(mano.mirror_points(r @ p), expected, atol=1e-12)


def test_skeleton_left_is_mirror_of_right_and_wrist_first():
    n = 3
    pose = rotations.axis_angle_to_matrix(np.random.default_rng(1).normal(0, 0.3, (n, 15, 3)))
    eye = np.repeat(np.eye(3)[None], n, 0)
    right = mano.skeleton_joints(np.zeros((n, 3)), eye, pose, "right")
    left = mano.skeleton_joints(np.zeros((n, 3)), eye, pose, "left")
    np.testing.assert_allclose(left, mano.mirror_points(right), atol=1e-12)
    wrist = np.array([[0.1, 0.2, 0.5]] * n)
    moved = mano.skeleton_joints(wrist, eye, pose, "right")
    np.testing.assert_allclose(moved[:, 0], wrist)
    # Flat pose: index tip (OpenPose 8) lies along +x from the wrist (rest pose).
    flat_pose = np.repeat(np.eye(3)[None, None], 15, 1)
    flat = mano.skeleton_joints(np.zeros((1, 3)), np.eye(3)[None], flat_pose, "right")
    np.testing.assert_allclose(flat[0, 8], [0.172, 0.025, 0.0], atol=1e-12)
