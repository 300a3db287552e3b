"""XHand ⇄ human mapping against the release's table, round trips, and chunk → robot targets by hand."""

import numpy as np
import pytest

from vitra_jax.handspace import robots

# The release's XHAND_HUMAN_MAPPING as printed in the reference (VITRA release `robot_dataset.py`):
# (index in the 18-d robot hand vector, index in the 51-d human hand vector, sign).
RELEASE_TABLE = [
    (6, 44, 1), (7, 43, -1), (8, 46, -1), (9, 7, 1), (10, 8, 1), (11, 14, 1),
    (12, 17, 1), (13, 23, 1), (14, 35, 1), (15, 41, 1), (16, 26, 1), (17, 32, 1),
]
# The same rows as named MANO joints / axes (MANO order index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3).
NAMED = ["thumb1 z", "thumb1 y", "thumb2 y", "index1 y", "index1 z", "index3 z",
         "middle1 z", "middle3 z", "ring1 z", "ring3 z", "pinky1 z", "pinky3 z"]
MANO_ORDER = [f"{f}{i}" for f in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)]


def _release_xhand_to_human(robot36):
    """A plain loop following the release's transfer_xhand_to_human (wrist copied, joints signed)."""
    out = np.zeros(102)
    for side in range(2):
        out[51 * side : 51 * side + 6] = robot36[18 * side : 18 * side + 6]
        for x_idx, h_idx, sign in RELEASE_TABLE:
            out[51 * side + h_idx] = sign * robot36[18 * side + x_idx]
    return out


def test_named_rows_agree_with_the_release_indices():
    for (_, h_idx, _), name in zip(RELEASE_TABLE, NAMED):
        joint, axis = name.split()
        assert h_idx == 6 + 3 * MANO_ORDER.index(joint) + "xyz".index(axis)


def test_human_to_xhand_follows_the_release_table():
    x = np.random.default_rng(0).normal(size=(4, 102))
    r = robots.human_to_xhand(x)
    assert r.shape == (4, 36)
    for side in range(2):
        np.testing.assert_array_equal(r[:, 18 * side : 18 * side + 6], x[:, 51 * side : 51 * side + 6])
        for x_idx, h_idx, sign in RELEASE_TABLE:
            np.testing.assert_array_equal(r[:, 18 * side + x_idx], sign * x[:, 51 * side + h_idx])
    np.testing.assert_array_equal(robots.xhand_joints(x, "right"), r[:, 24:36])


def test_xhand_to_human_matches_the_release_loop_and_masks_unmapped_dims():
    robot = np.random.default_rng(1).normal(size=(3, 36))
    human, mask = robots.xhand_to_human(robot)
    for i in range(3):
        np.testing.assert_array_equal(human[i], _release_xhand_to_human(robot[i]))
    expected_mask = np.zeros(102, bool)
    for side in range(2):
        expected_mask[51 * side : 51 * side + 6] = True
        expected_mask[[51 * side + h for _, h, _ in RELEASE_TABLE]] = True
    assert mask.shape == (3, 102) and mask.sum(-1).tolist() == [36] * 3
    np.testing.assert_array_equal(mask, np.broadcast_to(expected_mask, (3, 102)))
    assert not human[~mask].any()


def test_xhand_hand_pose_sets_one_euler_angle_per_joint_as_the_release_table():
    from scipy.spatial.transform import Rotation

    joints = np.random.default_rng(3).uniform(-0.8, 1.2, size=(4, 12))
    pose = robots.xhand_hand_pose(joints)
    assert pose.shape == (4, 15, 3, 3)
    angles = Rotation.from_matrix(pose.reshape(-1, 3, 3)).as_euler("xyz").reshape(4, 45)
    for i in range(4):
        robot = np.zeros(36)
        robot[24:36] = joints[i]  # the right hand's 12 joints
        np.testing.assert_allclose(angles[i], _release_xhand_to_human(robot)[57:102], atol=1e-12)
    with pytest.raises(ValueError, match="last axis of 12"):
        robots.xhand_hand_pose(np.zeros((2, 11)))


def test_round_trips():
    rng = np.random.default_rng(2)
    robot = rng.normal(size=(5, 36))
    np.testing.assert_array_equal(robots.human_to_xhand(robots.xhand_to_human(robot)[0]), robot)
    human = rng.normal(size=(5, 102))
    back, mask = robots.xhand_to_human(robots.human_to_xhand(human))
    np.testing.assert_array_equal(back[mask], human[mask])
    assert not back[~mask].any()


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def test_chunk_to_xhand_against_a_hand_integrated_path():
    # Left wrist starts at (0.1, 0, 0.5) unrotated; right at (-0.1, 0.2, 0.4) turned 0.3 rad about z.
    state = np.zeros(102)
    state[0:3] = [0.1, 0.0, 0.5]
    state[51:54] = [-0.1, 0.2, 0.4]
    state[56] = 0.3  # right Euler z
    actions = np.zeros((3, 102))
    actions[:, 0:3] = [[0.01, 0, 0], [0, 0.02, 0], [0, 0, -0.03]]
    actions[:, 51:54] = [[0, 0, 0.05], [0, 0, 0.05], [0.01, 0.01, 0]]
    actions[:, 54] = 0.2  # right: 0.2 rad about camera x per step, applied after (left of) the current pose
    for k in range(3):
        for j, (_, h_idx, _) in enumerate(RELEASE_TABLE):
            actions[k, h_idx] = 0.1 * (j + 1) + 0.01 * k
            actions[k, 51 + h_idx] = -0.05 * (j + 1) - 0.01 * k
    out = robots.chunk_to_xhand(state, actions)

    left, right = out["left"], out["right"]
    np.testing.assert_allclose(left.wrist_position, [[0.11, 0, 0.5], [0.11, 0.02, 0.5], [0.11, 0.02, 0.47]],
                               atol=1e-12)
    np.testing.assert_allclose(left.wrist_rotation, np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-12)
    np.testing.assert_allclose(right.wrist_position, [[-0.1, 0.2, 0.45], [-0.1, 0.2, 0.5], [-0.09, 0.21, 0.5]],
                               atol=1e-12)
    for k in range(3):
        np.testing.assert_allclose(right.wrist_rotation[k], _rx(0.2 * (k + 1)) @ _rz(0.3), atol=1e-12)
        for j, (_, _, sign) in enumerate(RELEASE_TABLE):
            assert left.joints[k, j] == pytest.approx(sign * (0.1 * (j + 1) + 0.01 * k))
            assert right.joints[k, j] == pytest.approx(sign * (-0.05 * (j + 1) - 0.01 * k))
    vec = right.robot_vector()
    assert vec.shape == (3, 18)
    np.testing.assert_allclose(vec[:, :3], right.wrist_position)
    for k in range(3):  # extrinsic Euler xyz (a, b, c) is Rz(c)·Ry(b)·Rx(a)
        a, b, c = vec[k, 3:6]
        np.testing.assert_allclose(_rz(c) @ _ry(b) @ _rx(a), right.wrist_rotation[k], atol=1e-12)
    np.testing.assert_allclose(vec[:, 6:], right.joints)
    assert list(robots.chunk_to_xhand(state, actions, hands="right")) == ["right"]


def test_mount_pose_axis_angle_becomes_euler_xyz():
    axis = np.array([1.0, 2.0, 2.0]) / 3.0
    angle = 0.7
    pose = np.concatenate([[0.1, -0.2, 0.3], axis * angle])
    out = robots.mount_pose_to_wrist(pose)
    np.testing.assert_allclose(out[:3], [0.1, -0.2, 0.3])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rodrigues = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    a, b, c = out[3:]
    np.testing.assert_allclose(_rz(c) @ _ry(b) @ _rx(a), rodrigues, atol=1e-12)  # extrinsic xyz = Rz·Ry·Rx


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: robots.human_to_xhand(np.zeros(101)), "last axis of 102"),
        (lambda: robots.xhand_to_human(np.zeros((2, 35))), "last axis of 36"),
        (lambda: robots.xhand_joints(np.zeros(102), "middle"), "unknown hand 'middle'"),
        (lambda: robots.chunk_to_xhand(np.zeros(102), np.zeros((4, 102)), hands=("left", "center")),
         "unknown hand 'center'"),
        (lambda: robots.chunk_to_xhand(np.zeros(101), np.zeros((4, 102))), "expected state"),
        (lambda: robots.chunk_to_xhand(np.zeros(102), np.zeros((4, 51))), "expected state"),
        (lambda: robots.mount_pose_to_wrist(np.zeros(7)), "last axis of 6"),
        (lambda: robots.xhand_observation(np.zeros((2, 36))), r"one robot vector \(36,\)"),
        (lambda: robots.xhand_observation(np.zeros(36), hands=("right", "thumb")), "unknown hand 'thumb'"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
