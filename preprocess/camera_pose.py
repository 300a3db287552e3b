"""Camera poses per clip, their recombination over a video, and world-space hands (VITRA §III stages 4–5).

Backends have `estimate(clip, frames, intrinsics) -> CameraPoses` (world→camera 4×4 per clip frame):
- `StaticPose()`: identity for every frame (a static camera: world = camera).
- `MegaSaMReader(path, frame_offset=0)`: MegaSAM's `outputs/<scene>_droid.npz`, key `cam_c2w` (N, 4, 4)
  camera→world for video frames frame_offset … frame_offset+N−1. Its translations are in the scale of the
  depth it was given (normalised unless metric depth such as MoGe-2's was fed in): `metric` says which.
- `HaworSlamReader(path, frame_offset=0)`: HaWoR's `SLAM/hawor_slam_w_scale_<s>_<e>.npz`, keys `traj`
  (N, 7: t_xyz + quaternion x, y, z, w; camera→world) and `scale` (metric scale of t, from Metric3D),
  applied as HaWoR's `load_slam_cam` does; frame_offset = s.

`stitch_poses` chains clips: clip k's world is mapped into clip k−1's (already chained) world by the
similarity that best aligns their cameras on the shared frames — rotation = the chordal mean of
R_prev·R_curᵀ, then scale (Sim(3), only when some clip's scale is unknown) and translation by least squares
on the camera centres (Umeyama's solution given the rotation) — and each frame's pose is then taken from the
clip whose centre is nearest, as `video.stitch` does. The world is the first clip's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from preprocess import video
from preprocess.errors import StageError
from preprocess.records import CameraPoses, CamHands, Clip, Intrinsics
from vitra_jax.handspace.geometry import invert_extrinsics
from vitra_jax.handspace.trajectory import HandTrack


class PoseError(StageError):
    """Camera poses that cannot be used."""


class StaticPose:
    """Identity extrinsics at every frame, recorded under `source` ('camera_frame': a moving camera left
    without an ego-motion estimate, hands staying in camera space)."""

    name = "static"

    def __init__(self, source: str = "static"):
        self.source = source

    def estimate(self, clip: Clip, frames=None, intrinsics: Intrinsics | None = None) -> CameraPoses:
        return CameraPoses(extrinsics=np.tile(np.eye(4), (len(clip), 1, 1)), source=self.source, scale_known=True)


def _load_npz(path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise PoseError("bad_poses", f"{path}: missing keys {missing} (has {sorted(z.files)})")
            return {k: np.asarray(z[k], np.float64) for k in keys}
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, PoseError):
            raise
        raise PoseError("unreadable_poses", f"{path}: {type(e).__name__}: {e}") from None


def _clip_slice(c2w: np.ndarray, clip: Clip, offset: int, path) -> np.ndarray:
    a, b = clip.start - offset, clip.stop - offset
    if a < 0 or b > len(c2w):
        raise PoseError("poses_do_not_cover_clip", f"{path}: poses for frames [{offset}, {offset + len(c2w)}) "
                                                   f"but {clip.name} needs [{clip.start}, {clip.stop})")
    return c2w[a:b]


def _c2w_to_poses(c2w: np.ndarray, source: str, scale_known: bool, path) -> CameraPoses:
    rot = c2w[:, :3, :3]
    if not np.isfinite(c2w).all() or np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max() > 1e-3:
        raise PoseError("bad_poses", f"{path}: camera→world matrices are not finite rigid transforms")
    return CameraPoses(extrinsics=invert_extrinsics(c2w), source=source, scale_known=scale_known)


class MegaSaMReader:
    name = "megasam"

    def __init__(self, path: str | Path, frame_offset: int = 0, metric: bool = False):
        self.path, self.frame_offset, self.metric = path, frame_offset, metric

    def estimate(self, clip: Clip, frames=None, intrinsics: Intrinsics | None = None) -> CameraPoses:
        c2w = _load_npz(self.path, ["cam_c2w"])["cam_c2w"]
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
            raise PoseError("bad_poses", f"{self.path}: cam_c2w must be (N, 4, 4), got {c2w.shape}")
        return _c2w_to_poses(_clip_slice(c2w, clip, self.frame_offset, self.path), "megasam", self.metric,
                             self.path)


class HaworSlamReader:
    name = "hawor_slam"

    def __init__(self, path: str | Path, frame_offset: int = 0):
        self.path, self.frame_offset = path, frame_offset

    def estimate(self, clip: Clip, frames=None, intrinsics: Intrinsics | None = None) -> CameraPoses:
        d = _load_npz(self.path, ["traj", "scale"])
        traj, scale = d["traj"], float(d["scale"].reshape(-1)[0])
        if traj.ndim != 2 or traj.shape[1] != 7:
            raise PoseError("bad_poses", f"{self.path}: traj must be (N, 7) t_xyz + quaternion xyzw, got {traj.shape}")
        norms = np.linalg.norm(traj[:, 3:], axis=1)
        if not (np.isfinite(traj).all() and np.isfinite(scale) and scale > 0 and (norms > 1e-6).all()):
            raise PoseError("bad_poses", f"{self.path}: non-finite or zero quaternions, or scale {scale}")
        c2w = np.tile(np.eye(4), (len(traj), 1, 1))
        c2w[:, :3, :3] = Rotation.from_quat(traj[:, 3:]).as_matrix()  # scipy's order is x, y, z, w
        c2w[:, :3, 3] = traj[:, :3] * scale
        return _c2w_to_poses(_clip_slice(c2w, clip, self.frame_offset, self.path), "hawor_slam", True, self.path)


def _project_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def align_similarity(prev_c2w: np.ndarray, cur_c2w: np.ndarray, with_scale: bool
                     ) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) with prev ≈ S ∘ cur for camera→world poses (N, 4, 4) of the same frames in two worlds:
    R_prev ≈ R·R_cur and c_prev ≈ s·R·c_cur + t. The scale stays 1 without `with_scale` or when the
    cameras barely move (it is then unobservable)."""
    rot = _project_rotation(np.einsum("nij,nkj->ik", prev_c2w[:, :3, :3], cur_c2w[:, :3, :3]))
    p, q = prev_c2w[:, :3, 3], cur_c2w[:, :3, 3]
    qr = q @ rot.T
    pc, qc = p - p.mean(0), qr - qr.mean(0)
    spread = float((qc**2).sum())
    scale = 1.0
    if with_scale and spread > 1e-12 * max(1.0, float((qr**2).sum())):
        scale = float((pc * qc).sum() / spread)
        if scale <= 0:
            raise PoseError("stitch_failed", f"negative scale {scale:.3g} aligning overlapping clips")
    t = p.mean(0) - scale * qr.mean(0)
    return scale, rot, t


def _apply_similarity(c2w: np.ndarray, scale: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = c2w.copy()
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = scale * c2w[:, :3, 3] @ rot.T + t
    return out


def stitch_poses(clips: Sequence[Clip], poses: Sequence[CameraPoses]) -> CameraPoses:
    """Per-clip poses (each in its own world) -> poses over the video in the first clip's world."""
    if len(clips) != len(poses) or not clips:
        raise ValueError(f"{len(clips)} clips but {len(poses)} pose sets")
    for clip, p in zip(clips, poses):
        if p.extrinsics.shape != (len(clip), 4, 4):
            raise ValueError(f"{clip.name}: extrinsics {p.extrinsics.shape} for {len(clip)} frames")
    with_scale = not all(p.scale_known for p in poses)
    aligned = [invert_extrinsics(poses[0].extrinsics)]
    for k in range(1, len(clips)):
        prev, cur = clips[k - 1], clips[k]
        overlap = slice(cur.start - prev.start, prev.stop - prev.start), slice(0, prev.stop - cur.start)
        if prev.stop - cur.start < 2:
            raise PoseError("stitch_failed", f"{prev.name} and {cur.name} share {prev.stop - cur.start} frames; "
                                             "at least 2 are needed to align their cameras")
        c2w = invert_extrinsics(poses[k].extrinsics)
        s, r, t = align_similarity(aligned[-1][overlap[0]], c2w[overlap[1]], with_scale)
        aligned.append(_apply_similarity(c2w, s, r, t))
    sources = sorted({p.source for p in poses})
    return CameraPoses(extrinsics=invert_extrinsics(video.stitch(clips, aligned)), source="+".join(sources),
                       scale_known=not with_scale)


def world_hands(cam: CamHands, poses: CameraPoses) -> dict[str, HandTrack]:
    """Camera-space hands -> world-space tracks: x_world = R_w2cᵀ (x_cam − t_w2c) per frame, for the wrist
    joint and all joints; orientations R_w2cᵀ·R_cam; finger poses and shape unchanged."""
    w2c = np.asarray(poses.extrinsics, np.float64)
    r, t = w2c[:, :3, :3], w2c[:, :3, 3]
    out = {}
    for name, hand in cam.hands.items():
        if len(hand.kept) != len(w2c):
            raise ValueError(f"{name} hand has {len(hand.kept)} frames but there are {len(w2c)} camera poses")
        out[name] = HandTrack(
            wrist=np.einsum("tji,tj->ti", r, hand.wrist - t),
            orient=np.einsum("tji,tjk->tik", r, hand.orient),
            hand_pose=np.asarray(hand.hand_pose, np.float64).copy(),
            joints=np.einsum("tji,tnj->tni", r, hand.joints - t[:, None]),
            kept=np.asarray(hand.kept, bool).copy(),
            beta=np.asarray(hand.beta, np.float64).copy(),
        )
    return out
