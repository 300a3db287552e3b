"""Fit MANO (global orientation, 15 joint rotations, shape) to 21 camera-space keypoints per frame.

The model is written in the release's convention (records.CamHand): joints = R · mirror(J_right(β, θ) − J0) + w
with mirror the x-flip for left hands, so the fitted `orient`, `hand_pose` (right-hand form) and `wrist`
(the wrist joint) are directly the stored fields. Every frame is fitted in one batch with a shared β: each
frame starts from a closed-form rigid alignment (Kabsch) of the flat hand to its palm keypoints, then Adam
runs a fixed number of steps (deterministic). β learns only from frames whose palm the rigid start already
matches, so a misdetected frame cannot bend the others' hands. A frame whose weighted RMS keypoint error stays above `max_error_m` is marked not kept.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from preprocess.hands.mano_model import ManoRight
from preprocess.records import CamHand

PALM = (0, 1, 5, 9, 13, 17)  # OpenPose wrist, thumb CMC and the four finger MCPs: nearly rigid


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """MANO fit settings. `joint_weights` (21, OpenPose order) lets a backend discount keypoints whose
    definition differs from MANO's (MediaPipe's wrist landmark sits 2–3 cm distal to the MANO wrist joint)."""

    iterations: int = 300
    lr_rotation: float = 0.05  # Adam step for the 6D orientation and the joint axis-angles
    lr_wrist: float = 0.003  # metres
    lr_beta: float = 0.05
    # The loss is (weighted mean squared keypoint error) / error_scale² + priors, per frame.
    error_scale_m: float = 0.01
    pose_prior: float = 0.02  # weight of |θ|² (axis-angle, rad², all 45 values)
    beta_prior: float = 1e-3  # weight of |β|²
    # weight of Σ|R_t − R_t−1|²_F over the 15 joint rotations of neighbouring frames (both fitted, both inliers):
    # keypoints leave twists about bones free, so without it solutions can flicker from frame to frame
    smooth_prior: float = 0.0
    fit_beta: bool = True
    max_error_m: float = 0.03
    joint_weights: tuple[float, ...] = (1.0,) * 21


def rotation_6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) two columns -> (..., 3, 3) rotation by Gram–Schmidt (Zhou et al. 2019)."""
    a, b = x[..., :3], x[..., 3:]
    c1 = torch.nn.functional.normalize(a, dim=-1)
    c2 = torch.nn.functional.normalize(b - (c1 * b).sum(-1, keepdim=True) * c1, dim=-1)
    return torch.stack([c1, c2, torch.cross(c1, c2, dim=-1)], dim=-1)


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) Rodrigues, smooth at zero (the angle is regularised by a tiny epsilon)."""
    angle = torch.sqrt((v * v).sum(-1, keepdim=True) + 1e-12)
    k = v / angle
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    kmat = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).view(*v.shape[:-1], 3, 3)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + s * kmat + (1 - c) * (kmat @ kmat)


def kabsch(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proper rotations R (T,3,3) and translations t (T,3) minimising Σ w|R·src + t − dst|² per frame."""
    w = w / w.sum()
    mu_s = np.einsum("j,tjk->tk", w, src)
    mu_d = np.einsum("j,tjk->tk", w, dst)
    cov = np.einsum("j,tja,tjb->tab", w, dst - mu_d[:, None], src - mu_s[:, None])
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= d[:, None]
    r = u @ vt
    return r, mu_d - np.einsum("tab,tb->ta", r, mu_s)


def _mirror(points: torch.Tensor, hand: str) -> torch.Tensor:
    return points * points.new_tensor([-1.0, 1.0, 1.0]) if hand == "left" else points


def fit_hand(model: ManoRight, keypoints: np.ndarray, valid: np.ndarray, hand: str,
             config: FitConfig = FitConfig(), score: np.ndarray | None = None) -> CamHand:
    """A CamHand fitted to keypoints (T, 21, 3) (camera frame, metres, OpenPose order) on frames `valid`."""
    keypoints = np.asarray(keypoints, np.float64)
    t_all = keypoints.shape[0]
    valid = np.asarray(valid, bool) & np.isfinite(keypoints).all(axis=(1, 2))
    score = np.zeros(t_all) if score is None else np.asarray(score, np.float64)
    out = CamHand(kept=np.zeros(t_all, bool), wrist=np.zeros((t_all, 3)),
                  orient=np.tile(np.eye(3), (t_all, 1, 1)), hand_pose=np.tile(np.eye(3), (t_all, 15, 1, 1)),
                  joints=np.zeros((t_all, 21, 3)), beta=np.zeros(10), score=np.zeros(t_all))
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return out
    dt = model.dtype
    target = torch.as_tensor(keypoints[idx], dtype=dt)
    weights = torch.as_tensor(np.asarray(config.joint_weights, np.float64), dtype=dt)
    n = idx.size

    with torch.no_grad():
        rest = _mirror(model.keypoints(torch.zeros(1, 10, dtype=dt), torch.eye(3, dtype=dt).expand(1, 15, 3, 3)),
                       hand)[0].double().numpy()
    palm_w = np.asarray(config.joint_weights)[list(PALM)]
    r0, w0 = kabsch(np.broadcast_to(rest[list(PALM)], (n, len(PALM), 3)), keypoints[idx][:, list(PALM)],
                    np.where(palm_w > 0, palm_w, 0.0) + 1e-9)

    rot6d = torch.tensor(np.concatenate([r0[:, :, 0], r0[:, :, 1]], -1), dtype=dt, requires_grad=True)
    wrist = torch.tensor(w0, dtype=dt, requires_grad=True)
    pose = torch.zeros(n, 15, 3, dtype=dt, requires_grad=True)
    beta = torch.zeros(1, 10, dtype=dt, requires_grad=config.fit_beta)
    # The shared shape is fitted only to frames whose palm the rigid start already matches, so a misdetection
    # cannot bend every other frame's hand.
    palm_residual = np.linalg.norm(np.einsum("tab,jb->tja", r0, rest[list(PALM)]) + w0[:, None]
                                   - keypoints[idx][:, list(PALM)], axis=-1)
    inlier = torch.as_tensor(np.sqrt((palm_residual**2 @ palm_w) / palm_w.sum()) <= 2 * config.max_error_m,
                             dtype=dt)
    groups = [{"params": [rot6d, pose], "lr": config.lr_rotation}, {"params": [wrist], "lr": config.lr_wrist}]
    if config.fit_beta:
        groups.append({"params": [beta], "lr": config.lr_beta})
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.iterations, eta_min=0.0)

    def predict(shape):
        local = _mirror(model.keypoints(shape, axis_angle_to_matrix(pose)), hand)
        return torch.einsum("nab,nkb->nka", rotation_6d_to_matrix(rot6d), local) + wrist[:, None]

    def per_frame_error(pred):
        return ((pred - target) ** 2).sum(-1) @ weights / weights.sum()  # (n,) weighted mean squared error

    gate = inlier[:, None]
    linked = torch.as_tensor((np.diff(idx) == 1), dtype=dt) * inlier[1:] * inlier[:-1]  # neighbouring frames
    for _ in range(config.iterations):
        opt.zero_grad()
        shape = gate * beta + (1 - gate) * beta.detach()  # same value everywhere; only inliers move beta
        loss = (per_frame_error(predict(shape)).sum() / config.error_scale_m**2
                + config.pose_prior * (pose**2).sum() + inlier.sum() * config.beta_prior * (beta**2).sum())
        if config.smooth_prior > 0 and n > 1:
            mats = axis_angle_to_matrix(pose)
            loss = loss + config.smooth_prior * (((mats[1:] - mats[:-1]) ** 2).sum((1, 2, 3)) @ linked)
        loss.backward()
        opt.step()
        sched.step()

    with torch.no_grad():
        pred = predict(beta)
        rms = per_frame_error(pred).sqrt().double().numpy()
        ok = np.isfinite(rms) & (rms <= config.max_error_m)
        out.kept[idx] = ok
        out.orient[idx] = rotation_6d_to_matrix(rot6d).double().numpy()
        out.hand_pose[idx] = axis_angle_to_matrix(pose).double().numpy()
        out.wrist[idx] = wrist.double().numpy()
        out.joints[idx] = pred.double().numpy()
        out.beta = beta[0].double().numpy()
        out.score[idx] = np.where(ok, score[idx], 0.0)
    return out
