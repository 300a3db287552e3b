"""MANO parameters as other tools write them -> records.CamHand (the release's convention).

Our convention (records.CamHand, VITRA release): `hand_pose` in right-hand form for both hands, `orient`
applied after mirroring the right model's joints in x for a left hand, `wrist` the wrist joint:
    joints = orient · mirror(J_right(β, hand_pose) − J0(β)) + wrist
Tools report MANO's `transl` instead of the wrist: MANO rotates about J0, so the wrist joint is J0(β) + transl
for the right model and mirror(J0(β)) + transl for a mirrored right (or a mirror-symmetric left) model.
Tools also assume their own focal length; `refocus` moves a hand so it projects to the same pixels with ours.
"""

from __future__ import annotations

import numpy as np

from preprocess.hands.mano_model import ManoRight, release_joints, wrist_rest
from preprocess.records import CamHand

MIRROR = np.diag([-1.0, 1.0, 1.0])


def camhand_from_params(model: ManoRight, hand: str, orient: np.ndarray, hand_pose: np.ndarray,
                        transl: np.ndarray, betas: np.ndarray, kept: np.ndarray, score: np.ndarray) -> CamHand:
    """A CamHand from per-frame MANO parameters already in our convention (see module doc), with MANO `transl`.

    orient (T, 3, 3), hand_pose (T, 15, 3, 3) right-hand form, transl (T, 3), betas (T, 10) per frame.
    The wrist uses each frame's β (where the tool put the hand); the stored shape is the mean β of kept frames
    and the joints are computed with it.
    """
    kept = np.asarray(kept, bool)
    t = len(kept)
    orient = np.where(kept[:, None, None], orient, np.eye(3))
    hand_pose = np.where(kept[:, None, None, None], hand_pose, np.eye(3))
    betas = np.asarray(betas, np.float64)
    beta = betas[kept].mean(0) if kept.any() else np.zeros(10)
    j0 = wrist_rest(model, betas)
    if hand == "left":
        j0 = j0 @ MIRROR
    wrist = np.where(kept[:, None], j0 + np.asarray(transl, np.float64), 0.0)
    joints = release_joints(model, beta, hand_pose, orient, wrist, hand)
    joints[~kept] = 0.0
    return CamHand(kept=kept, wrist=wrist, orient=orient, hand_pose=hand_pose, joints=joints, beta=beta,
                   score=np.where(kept, np.asarray(score, np.float64), 0.0).reshape(t))


def refocus(cam: CamHand, k_from: np.ndarray, k_to: np.ndarray) -> CamHand:
    """The hand moved so its wrist projects to the same pixel with intrinsics k_to as it did with k_from.

    Depth scales with the focal length (fx), then x, y follow from the pixel: exact for the wrist,
    and for the other joints up to the hand's depth extent over its distance.
    """
    w = cam.wrist
    z_from = np.where(cam.kept, w[:, 2], 1.0)
    u = k_from[0, 0] * w[:, 0] / z_from + k_from[0, 2]
    v = k_from[1, 1] * w[:, 1] / z_from + k_from[1, 2]
    z = w[:, 2] * k_to[0, 0] / k_from[0, 0]
    new = np.stack([(u - k_to[0, 2]) * z / k_to[0, 0], (v - k_to[1, 2]) * z / k_to[1, 1], z], -1)
    new = np.where(cam.kept[:, None], new, 0.0)
    joints = np.where(cam.kept[:, None, None], cam.joints + (new - w)[:, None], 0.0)
    return CamHand(kept=cam.kept, wrist=new, orient=cam.orient, hand_pose=cam.hand_pose, joints=joints,
                   beta=cam.beta, score=cam.score)
