"""MANO conventions: joint order, left-hand mirroring and a MANO-free skeleton for synthetic hands.

- `hand_pose` holds the 15 local joint rotations relative to the flat hand, in MANO order
  index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3 (joint i+1 of the 16-joint kinematic tree).
- The 21 keypoints are in OpenPose order: wrist; thumb 1-4; index 5-8; middle 9-12; ring 13-16;
  pinky 17-20 (palm centre = 9).
- Left hands (VITRA release): `hand_pose` stays in right-hand form; right-model joints are mirrored in x and
  the stored left global orientation is applied after mirroring:
  J = R_world · mirror(J_right − J0) + wrist.
  Mirroring a rotation between hands is M·R·M with M = diag(−1, 1, 1), i.e. axis-angle (x, −y, −z).
`skeleton_joints` uses a fixed synthetic rest pose (not derived from MANO data) for demo data and tests.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 21
MANO_JOINT_NAMES = (
    "index1", "index2", "index3", "middle1", "middle2", "middle3", "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3", "thumb1", "thumb2", "thumb3",
)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
# Fingertips appended as MANO joints 16..20 (thumb, index, middle, ring, pinky), then reordered to OpenPose.
TIP_PARENTS = (15, 3, 6, 12, 9)
MANO_TO_OPENPOSE = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
PALM_JOINTS = (0, 2, 5, 9, 13, 17)  # OpenPose indices averaged for the palm trajectory (VITRA §3.4)
# OpenPose bones for drawing: (parent, child).
OPENPOSE_BONES = tuple((0 if j % 4 == 1 else j - 1, j) for j in range(1, 21))

MIRROR = np.diag([-1.0, 1.0, 1.0])


def mirror_points(points: np.ndarray) -> np.ndarray:
    """Reflect points (..., 3) across the x = 0 plane (right-hand model -> left hand)."""
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] *= -1
    return out


def mirror_rotation(rot: np.ndarray) -> np.ndarray:
    """M · R · M for rotations (..., 3, 3): the same motion seen in the mirrored hand."""
    return MIRROR @ np.asarray(rot, dtype=np.float64) @ MIRROR


def mirror_axis_angle(v: np.ndarray) -> np.ndarray:
    """Axis-angle (..., 3) of M · R · M: (x, −y, −z)."""
    return np.asarray(v, dtype=np.float64) * np.array([1.0, -1.0, -1.0])


def _rest_joints() -> np.ndarray:
    """Synthetic right-hand rest pose (16 MANO joints + 5 tips, metres, wrist at origin, fingers along +x)."""
    bases = {"index": (0.09, 0.025), "middle": (0.095, 0.0), "pinky": (0.075, -0.045), "ring": (0.09, -0.022)}
    pts = [np.zeros(3)]
    for name in ("index", "middle", "pinky", "ring"):
        x0, y0 = bases[name]
        pts += [np.array([x0 + 0.03 * i, y0, 0.0]) for i in range(3)]
    pts += [np.array([0.025 + 0.025 * i, 0.04 + 0.015 * i, -0.01]) for i in range(3)]  # thumb
    tips = [pts[15] + [0.022, 0.008, 0], pts[3] + [0.022, 0, 0], pts[6] + [0.024, 0, 0],
            pts[12] + [0.022, 0, 0], pts[9] + [0.018, 0, 0]]
    return np.stack(pts + [np.asarray(t, dtype=np.float64) for t in tips])


REST_JOINTS = _rest_joints()


def skeleton_joints(wrist: np.ndarray, orient: np.ndarray, hand_pose: np.ndarray, hand: str) -> np.ndarray:
    """21 OpenPose joints (T, 21, 3) of the synthetic skeleton.

    wrist (T, 3), orient (T, 3, 3) global wrist orientation, hand_pose (T, 15, 3, 3) right-hand form.
    """
    hand_pose = np.asarray(hand_pose, dtype=np.float64)
    n = hand_pose.shape[0]
    glob = np.zeros((n, 16, 3, 3))
    pos = np.zeros((n, 21, 3))
    glob[:, 0] = np.eye(3)
    parents = MANO_PARENTS + TIP_PARENTS
    for j in range(1, 21):
        p = parents[j]
        pos[:, j] = pos[:, p] + (glob[:, p] @ (REST_JOINTS[j] - REST_JOINTS[p]))
        if j < 16:
            glob[:, j] = glob[:, p] @ hand_pose[:, j - 1]
    if hand == "left":
        pos = mirror_points(pos)
    world = np.einsum("tij,tkj->tki", np.asarray(orient, dtype=np.float64), pos) + np.asarray(wrist)[:, None]
    return world[:, list(MANO_TO_OPENPOSE)]
