"""The evaluation's chunk-end errors against values worked out by hand."""

import numpy as np

from vitra_jax import evaluate
from vitra_jax.handspace import robots

LEFT_FINGERS, RIGHT_FINGERS = 6, 57  # first finger angle of each hand in the 102-d layout


def _paths():
    """4 states (the observed one, then 3 steps); left valid for steps 0-1 (ends at row 2), right for 0-2."""
    truth, path = np.zeros((4, 102)), np.zeros((4, 102))
    mask = np.array([[1, 1], [1, 1], [0, 1]], bool)
    path[2, LEFT_FINGERS:LEFT_FINGERS + 45] = 0.1
    path[2, LEFT_FINGERS + 5], truth[2, LEFT_FINGERS + 5] = np.pi - 0.05, -np.pi + 0.05  # 0.1 apart across ±π
    path[3, RIGHT_FINGERS:RIGHT_FINGERS + 45] = -0.01 * np.arange(45)
    path[3, :3] = [0.03, 0.04, 0.0]  # left wrist moved 5 cm at row 3: not its last valid row, so not counted
    path[2, :3] = [0.0, 0.0, 0.02]
    path[3, 51:54] = [0.0, 0.06, 0.08]
    return path, truth, mask


def test_finger_error_wraps_angles_and_takes_each_hand_at_its_last_valid_step():
    path, truth, mask = _paths()
    left, right = evaluate.final_finger_error(path, truth, mask)
    np.testing.assert_allclose(left, 0.1, atol=1e-12)
    np.testing.assert_allclose(right, 0.01 * np.arange(45).mean(), atol=1e-12)  # 0.22 rad
    _, right12 = evaluate.final_finger_error(path, truth, mask, robots.FINGER_INDEX)
    np.testing.assert_allclose(right12, 0.01 * np.mean(robots.FINGER_INDEX), atol=1e-12)
    assert evaluate.final_finger_error(path, truth, np.array([[0, 1]] * 3, bool)) == [right]


def test_wrist_error_at_each_hands_last_valid_step():
    path, truth, mask = _paths()
    np.testing.assert_allclose(evaluate.final_wrist_error(path, truth, mask), [0.02, 0.10], atol=1e-12)
