"""A synthetic MANO_RIGHT.pkl with the real file's keys, shapes and dtypes (nothing derived from MANO data).

The rest skeleton is `vitra_jax.handspace.mano.REST_JOINTS` (a fixed hand-like skeleton, fingers along +x),
shifted so the wrist joint is NOT at the origin (as in the real model, where MANO's `transl` and the wrist
joint differ). Each joint is regressed from one dedicated vertex placed on it; the fingertip vertices sit at
the ids smplx uses for MANO tips (thumb 744, index 320, middle 443, ring 554, pinky 671) and follow their
finger's last joint. Other vertices scatter around their owner joint. Shape component 0 scales the hand;
the rest, and the pose correctives, are small random values. All random values come from `default_rng(0)`.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import scipy.sparse

from vitra_jax.handspace.mano import MANO_PARENTS, REST_JOINTS, TIP_PARENTS

NUM_VERTS = 778
TIP_VERTEX_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky (smplx vertex_ids['mano'])
JOINT_VERTEX_IDS = tuple(11 + 23 * j for j in range(16))  # one regressor vertex per joint, away from the tips
WRIST_REST = np.array([0.0957, 0.0064, 0.0062])  # where the synthetic wrist joint sits in the template


def synthetic_mano_arrays(left: bool = False, pose_correctives: bool = True) -> dict:
    """The right model; or, with `left`, its exact mirror image (x negated in the template, the joints and the
    shape directions: the left model as HaWoR uses it, after its shapedirs sign fix). Pose correctives are not
    mirror-symmetric under the same matrix, so a mirrored pair needs `pose_correctives=False` on both sides."""
    rng = np.random.default_rng(0)
    joints = REST_JOINTS[:16] + WRIST_REST
    tips = REST_JOINTS[16:] + WRIST_REST
    owner = rng.integers(0, 16, NUM_VERTS)
    v = joints[owner] + rng.normal(0.0, 0.005, (NUM_VERTS, 3))
    for j, vid in enumerate(JOINT_VERTEX_IDS):
        owner[vid], v[vid] = j, joints[j]
    for t, vid in enumerate(TIP_VERTEX_IDS):
        owner[vid], v[vid] = TIP_PARENTS[t], tips[t]
    weights = np.eye(16)[owner]
    regressor = np.zeros((16, NUM_VERTS))
    regressor[np.arange(16), JOINT_VERTEX_IDS] = 1.0
    shapedirs = rng.normal(0.0, 1e-3, (NUM_VERTS, 3, 10))
    shapedirs[:, :, 0] = 0.05 * (v - joints[0])  # beta_0 = 1 makes the hand 5% larger about the wrist
    q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    posedirs = rng.normal(0.0, 1e-3, (NUM_VERTS, 3, 135)) * pose_correctives
    faces = rng.integers(0, NUM_VERTS, (1538, 3)).astype(np.uint32)
    if left:
        v, joints = v * [-1.0, 1.0, 1.0], joints * [-1.0, 1.0, 1.0]
        shapedirs[:, 0] *= -1
        faces = faces[:, [0, 2, 1]]
    kintree = np.array([[4294967295] + list(MANO_PARENTS[1:]), list(range(16))], dtype=np.int64)
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": scipy.sparse.csc_matrix(regressor),
        "weights": weights,
        "kintree_table": kintree,
        "f": faces,
        "hands_components": q,
        "hands_mean": rng.normal(0.0, 0.1, 45),
        "hands_coeffs": rng.normal(0.0, 0.1, (1554, 45)),
        "J": joints,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_synthetic_mano(folder: str | Path, left: bool = False, pose_correctives: bool = True) -> Path:
    """Write `folder/MANO_RIGHT.pkl` (or `MANO_LEFT.pkl`; pickle protocol 2, like the release); return its path."""
    path = Path(folder) / ("MANO_LEFT.pkl" if left else "MANO_RIGHT.pkl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(synthetic_mano_arrays(left, pose_correctives), f, protocol=2)
    return path


OPENPOSE_FROM_MANO = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]


def smplx_joints(model_file, beta, pose_aa, orient_aa, transl) -> np.ndarray:
    """(T, 21, 3) OpenPose joints by smplx's full MANO forward: the 16 joints, then the fingertip vertices
    (thumb 744, index 320, middle 443, ring 554, pinky 671) appended and reordered, as the release's MANO
    wrapper does. beta (10,) or (T, 10); pose_aa (T, 15, 3), orient_aa (T, 3), transl (T, 3)."""
    import smplx
    import torch

    n = len(pose_aa)
    layer = smplx.MANO(model_path=str(model_file), is_rhand="RIGHT" in Path(model_file).name, use_pca=False,
                       flat_hand_mean=True, batch_size=n, dtype=torch.float64)
    betas = torch.tensor(np.broadcast_to(np.asarray(beta, np.float64), (n, 10)).copy())
    out = layer(betas=betas, global_orient=torch.tensor(np.asarray(orient_aa, np.float64)),
                hand_pose=torch.tensor(np.asarray(pose_aa, np.float64).reshape(n, 45)),
                transl=torch.tensor(np.asarray(transl, np.float64)))
    joints = torch.cat([out.joints, out.vertices[:, list(TIP_VERTEX_IDS)]], 1).detach().numpy()
    return joints[:, OPENPOSE_FROM_MANO]
