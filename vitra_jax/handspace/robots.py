"""XHand (12-DoF dexterous hand) ⇄ the 102-d human hand space, and predicted chunks → robot targets (numpy only).

The release fine-tunes on XHand teleoperation with a fixed joint table (official
`robot_dataset.py::XHAND_HUMAN_MAPPING`): XHand joint j of a hand equals `sign · θ[d]`, where θ[d] is one Euler
component of one MANO finger joint of the same hand (index `d = 3 · mano_joint + axis` inside the 45 finger
angles). The table is the same for both hands: left finger poses are stored in right-hand form (VITRA §2.6).
The release's robot vector per hand is 18-d `[wrist position (3) | wrist Euler xyz (3) | 12 joints]`, laid out
`[left 0:18 | right 18:36]`; its wrist 6 dims are copied to and from the human wrist slots unchanged.

Masks: the release marks all 51 dims of a tracked hand valid in robot samples, so the 33 finger angles XHand
cannot express are supervised as zeros; robot episodes built here (`xhand_hand_pose`, the hand_vla `teledata`
source) do the same. That choice is forced: the loss counts a component's valid steps at its first dim
(`models/diffusion.py`), and the fingers' first dim (index1, Euler x) is one XHand does not drive, so masking
the unmapped dims would silence the finger loss altogether. `mapped_mask` and the mask `xhand_to_human` returns
say which dims the robot really provides (for analysis and metrics, not for training masks).

Facts the release does not give, left open here rather than guessed:
- no scale, offset or joint-limit clipping is applied (the table has a sign only); a robot driver clips to the
  XHand joint limits itself;
- whether robot wrist actions are per-step deltas is left to the user in the release (its robot loader is a
  stub); `chunk_to_xhand` reads predicted chunks as human-space actions (wrist deltas, absolute fingers);
- aligning the XHand mount frame with the human wrist frame (camera x right, y down, z forward, mirrored
  between hands) is a calibration outside this module.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vitra_jax.handspace import layout, rotations
from vitra_jax.handspace.mano import MANO_JOINT_NAMES
from vitra_jax.handspace.trajectory import integrate_actions

NUM_XHAND_JOINTS = 12
ROBOT_HAND_DIM = 6 + NUM_XHAND_JOINTS
ROBOT_DIM = 2 * ROBOT_HAND_DIM
_AXES = "xyz"

# XHand joint j (list position) -> (MANO joint, Euler axis, sign). XHand's second flexion joint of each finger
# drives the MANO distal (…3) joint, as in the release.
XHAND_MAPPING: tuple[tuple[str, str, float], ...] = (
    ("thumb1", "z", 1.0),
    ("thumb1", "y", -1.0),
    ("thumb2", "y", -1.0),
    ("index1", "y", 1.0),
    ("index1", "z", 1.0),
    ("index3", "z", 1.0),
    ("middle1", "z", 1.0),
    ("middle3", "z", 1.0),
    ("ring1", "z", 1.0),
    ("ring3", "z", 1.0),
    ("pinky1", "z", 1.0),
    ("pinky3", "z", 1.0),
)
# Index of each XHand joint's angle inside one hand's 45 finger angles, and its sign.
FINGER_INDEX = np.array([3 * MANO_JOINT_NAMES.index(j) + _AXES.index(a) for j, a, _ in XHAND_MAPPING])
SIGNS = np.array([s for _, _, s in XHAND_MAPPING])


def _hand_index(hand: str) -> int:
    if hand not in layout.HANDS:
        raise ValueError(f"unknown hand {hand!r}; expected one of {layout.HANDS}")
    return layout.HANDS.index(hand)


def _last_axis(x: np.ndarray, size: int, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != size:
        raise ValueError(f"{what} must have a last axis of {size}; got shape {x.shape}")
    return x


def human_dims(hand: str) -> np.ndarray:
    """Positions in a 102-d vector of `hand`'s 12 XHand joints (list order)."""
    return _hand_index(hand) * layout.HAND_DIM + layout.FINGERS.start + FINGER_INDEX


def mapped_mask() -> np.ndarray:
    """(102,) bool: the human dims an XHand pair provides (both wrists' 6 dims and the 12 mapped angles each)."""
    mask = np.zeros(layout.ACTION_DIM, bool)
    for h in layout.HANDS:
        mask[layout.hand_part(h, layout.WRIST)] = True
        mask[human_dims(h)] = True
    return mask


def xhand_joints(human: np.ndarray, hand: str) -> np.ndarray:
    """XHand joint targets (..., 12) of `hand` from human states or actions (..., 102)."""
    human = _last_axis(human, layout.ACTION_DIM, "a human state/action")
    return human[..., human_dims(hand)] * SIGNS


def human_to_xhand(human: np.ndarray) -> np.ndarray:
    """Human states or actions (..., 102) -> robot vectors (..., 36): per hand [wrist 6 | 12 XHand joints]."""
    human = _last_axis(human, layout.ACTION_DIM, "a human state/action")
    parts = []
    for h in layout.HANDS:
        parts += [human[..., layout.hand_part(h, layout.WRIST)], xhand_joints(human, h)]
    return np.concatenate(parts, axis=-1)


def xhand_to_human(robot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Robot vectors (..., 36) -> human vectors (..., 102) and their per-dim mask (..., 102).

    Unmapped finger angles are zero and masked out.
    """
    robot = _last_axis(robot, ROBOT_DIM, "an XHand robot vector")
    human = np.zeros(robot.shape[:-1] + (layout.ACTION_DIM,))
    for i, h in enumerate(layout.HANDS):
        block = robot[..., i * ROBOT_HAND_DIM : (i + 1) * ROBOT_HAND_DIM]
        human[..., layout.hand_part(h, layout.WRIST)] = block[..., :6]
        human[..., human_dims(h)] = block[..., 6:] * SIGNS
    return human, np.broadcast_to(mapped_mask(), human.shape).copy()


def xhand_hand_pose(joints: np.ndarray) -> np.ndarray:
    """XHand joint angles (..., 12) of one hand -> its 15 MANO finger rotations (..., 15, 3, 3), right-hand form.

    Each mapped angle sets one Euler xyz component of its MANO joint (`XHAND_MAPPING`); the other components are
    zero, so unmapped joints are identity rotations and reading the pose back gives the angles exactly.
    """
    joints = _last_axis(joints, NUM_XHAND_JOINTS, "XHand joint angles")
    angles = np.zeros(joints.shape[:-1] + (45,))
    angles[..., FINGER_INDEX] = joints * SIGNS
    return rotations.euler_to_matrix(angles.reshape(joints.shape[:-1] + (15, 3)))


def xhand_observation(robot: np.ndarray, hands: str | tuple[str, ...] = ("right",),
                      chunk_len: int = 16) -> dict[str, np.ndarray]:
    """Policy inputs for the current robot vector (36,) of the hands in `hands`, as training saw robot data
    (the hand_vla `teledata` source): `state` (102,) with the wrist and the table's 12 angles per hand,
    `state_mask` (102,) and `action_mask` (chunk_len, 102) true on all 51 dims of each hand in `hands`.
    (`xhand_to_human`'s narrower mask is not what the model was trained with.)"""
    hands = (hands,) if isinstance(hands, str) else tuple(hands)
    robot = _last_axis(robot, ROBOT_DIM, "an XHand robot vector")
    if robot.ndim != 1:
        raise ValueError(f"one robot vector (36,) expected, got shape {robot.shape}")
    for h in hands:
        _hand_index(h)
    mask = layout.expand_hand_mask([h in hands for h in layout.HANDS])
    return {"state": xhand_to_human(robot)[0] * mask, "state_mask": mask,
            "action_mask": np.broadcast_to(mask, (chunk_len, mask.size)).copy()}


def mount_pose_to_wrist(pose: np.ndarray) -> np.ndarray:
    """TeleData `*_hand_mount_pose_in_cam` (..., 6) `[x, y, z, axis-angle]` -> (..., 6) `[x, y, z, Euler xyz]`."""
    pose = _last_axis(pose, 6, "a mount pose")
    euler = rotations.matrix_to_euler(rotations.axis_angle_to_matrix(pose[..., 3:]))
    return np.concatenate([pose[..., :3], euler], axis=-1)


@dataclasses.dataclass
class XHandTargets:
    """One hand's targets for the N steps of a chunk, in the camera frame of the chunk's anchor frame."""

    joints: np.ndarray  # (N, 12) XHand joint angles, radians
    wrist_position: np.ndarray  # (N, 3) metres
    wrist_rotation: np.ndarray  # (N, 3, 3)

    def robot_vector(self) -> np.ndarray:
        """(N, 18) `[wrist position | wrist Euler xyz | 12 joints]`, the release's robot layout for one hand."""
        euler = rotations.matrix_to_euler(self.wrist_rotation)
        return np.concatenate([self.wrist_position, euler, self.joints], axis=-1)


def chunk_to_xhand(
    state: np.ndarray, actions: np.ndarray, hands: str | tuple[str, ...] = layout.HANDS,
) -> dict[str, XHandTargets]:
    """Per hand, the targets after each of the N steps of an unnormalized chunk (N, 102) from state (102,).

    Wrist poses are the chunk integrated from the state (`trajectory.integrate_actions`); joints come from the
    absolute finger angles of each step.
    """
    hands = (hands,) if isinstance(hands, str) else tuple(hands)
    for h in hands:
        _hand_index(h)
    states = integrate_actions(state, actions)[1:]
    out = {}
    for h in hands:
        out[h] = XHandTargets(
            joints=xhand_joints(states, h),
            wrist_position=states[:, layout.hand_part(h, layout.TRANS)],
            wrist_rotation=rotations.euler_to_matrix(states[:, layout.hand_part(h, layout.ROT)]),
        )
    return out
