"""The MANO right-hand model (via smplx) and its 21 OpenPose keypoints, for fitting and for reading backends.

Only `MANO_RIGHT.pkl` is used: left hands follow the release's convention (right model mirrored in x, see
`vitra_jax.handspace.mano`). `hand_pose` is relative to the flat hand (smplx `flat_hand_mean=True`, the
MANOLayer convention of HaMeR, HaWoR, WiLoR and VITRA). Keypoints are the 16 MANO joints plus the fingertip
vertices appended (thumb, index, middle, ring, pinky) and reordered to OpenPose, as the release's MANO wrapper
does. `keypoints` runs the skinning only for those 5 vertices, so fitting thousands of frames stays cheap.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from preprocess.hands.mano_files import MissingManoError, mano_file
from vitra_jax.handspace.mano import MANO_TO_OPENPOSE

TIP_VERTEX_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky (smplx vertex_ids['mano'])


class ManoRight(torch.nn.Module):
    """smplx's MANO right hand plus `keypoints()` (21 OpenPose points with the global rotation at identity)."""

    def __init__(self, path: Path, dtype=torch.float64):
        super().__init__()
        import smplx  # imported here: smplx is only needed once a MANO file is used

        try:
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note about 10 shape components
                self.layer = smplx.MANO(model_path=str(path), is_rhand=True, use_pca=False, flat_hand_mean=True,
                                        batch_size=1, dtype=dtype)
        except (pickle.UnpicklingError, ModuleNotFoundError, EOFError, KeyError) as e:
            raise MissingManoError(
                f"{path}: cannot read it as a MANO model ({type(e).__name__}: {e}). The official file is pickled "
                "with chumpy; convert it to plain numpy with smplx's tools/clean_ch.py.") from None
        self.path = path
        self.dtype = dtype
        tips = torch.tensor(TIP_VERTEX_IDS)
        posedirs = self.layer.posedirs.view(135, -1, 3)[:, tips]  # (135, 5, 3)
        self.register_buffer("tip_posedirs", posedirs.reshape(135, 15))
        self.register_buffer("tip_weights", self.layer.lbs_weights[tips])  # (5, 16)
        self.register_buffer("tips", tips)
        self.openpose = list(MANO_TO_OPENPOSE)

    def rest_joints(self, beta: torch.Tensor) -> torch.Tensor:
        """(B, 16, 3) joints of the shaped, unposed hand; [:, 0] is the wrist joint J0(beta)."""
        from smplx.lbs import blend_shapes, vertices2joints

        v_shaped = self.layer.v_template + blend_shapes(beta, self.layer.shapedirs)
        return vertices2joints(self.layer.J_regressor, v_shaped)

    def keypoints(self, beta: torch.Tensor, hand_pose: torch.Tensor) -> torch.Tensor:
        """(B, 21, 3) OpenPose keypoints with identity global rotation, relative to the wrist joint.

        beta (B, 10) or (1, 10); hand_pose (B, 15, 3, 3) rotation matrices (right-hand form).
        """
        from smplx.lbs import batch_rigid_transform, blend_shapes, vertices2joints

        n = hand_pose.shape[0]
        v_shaped = self.layer.v_template + blend_shapes(beta, self.layer.shapedirs)  # (Bb, 778, 3)
        joints = vertices2joints(self.layer.J_regressor, v_shaped).expand(n, 16, 3)
        tips_shaped = v_shaped[:, self.tips].expand(n, 5, 3)
        eye = torch.eye(3, dtype=hand_pose.dtype, device=hand_pose.device)
        rots = torch.cat([eye.expand(n, 1, 3, 3), hand_pose], dim=1)  # (n, 16, 3, 3)
        pose_feature = (hand_pose - eye).reshape(n, 135)
        tips_posed = tips_shaped + (pose_feature @ self.tip_posedirs).view(n, 5, 3)
        posed, transforms = batch_rigid_transform(rots, joints, self.layer.parents, dtype=hand_pose.dtype)
        t = torch.einsum("vj,njab->nvab", self.tip_weights, transforms)  # (n, 5, 4, 4)
        tips = torch.einsum("nvab,nvb->nva", t[..., :3, :3], tips_posed) + t[..., :3, 3]
        out = torch.cat([posed, tips], dim=1) - posed[:, :1]
        return out[:, self.openpose]


def load_mano(mano_dir: str | Path, dtype=torch.float64) -> ManoRight:
    """The right-hand MANO model from `mano_dir`; `MissingManoError` names the missing file and its source."""
    return ManoRight(mano_file(mano_dir), dtype=dtype)


def release_joints(model: ManoRight, beta: np.ndarray, hand_pose: np.ndarray, orient: np.ndarray,
                   wrist: np.ndarray, hand: str) -> np.ndarray:
    """(T, 21, 3) joints in the release convention: orient · mirror(J_right − J0) + wrist (mirror for left).

    beta (10,) shared or (T, 10) per frame."""
    beta = np.asarray(beta, np.float64).reshape(-1, 10)
    with torch.no_grad():
        local = model.keypoints(torch.as_tensor(beta, dtype=model.dtype),
                                torch.as_tensor(np.asarray(hand_pose, np.float64), dtype=model.dtype))
    local = local.double().numpy()
    if hand == "left":
        local[..., 0] *= -1
    return np.einsum("tij,tkj->tki", np.asarray(orient, np.float64), local) + np.asarray(wrist)[:, None]


def wrist_rest(model: ManoRight, beta: np.ndarray) -> np.ndarray:
    """J0(beta): MANO's wrist joint in the template frame; the wrist joint equals J0 + transl (right model)."""
    with torch.no_grad():
        b = torch.as_tensor(np.asarray(beta, np.float64).reshape(-1, 10), dtype=model.dtype)
        return model.rest_joints(b)[:, 0].double().numpy().reshape(np.shape(beta)[:-1] + (3,))
