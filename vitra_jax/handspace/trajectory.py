"""The 102-d state and action of hand trajectories, and their inverse (numpy only).

Definitions (VITRA §III-A; official `EpisodicDatasetCore.get_item_frame`, `rel_mode='step'`): for a chunk
anchored at frame t, every frame k is expressed in the camera of t (R_c = R_w2c[t] · R_world,
p_c = R_w2c[t] · p_world + t_w2c[t]), so camera motion inside the chunk is removed. Per hand:
  state(t)    = [p_c(t), euler(R_c(t)), euler(θ(t))]                      valid iff kept(t)
  action(k)   = [p_c(k+1) − p_c(k), euler(R_c(k+1) · R_c(k)ᵀ), euler(θ(k+1))]
                                                                     valid iff kept(k) & kept(k+1)
Slots past the episode end are invalid; invalid values are zero. A hand may be limited to a window [s, e)
of frames (the release limits the secondary hand to the caption interval covering t): its steps reaching a
frame ≥ e are invalid too.

Deliberate difference from the release: when t+n−1 is the last frame of the episode (or of a hand's window),
the release's extra "next" frame is clipped without being flagged, so its step n−1 is valid with zero
motion (one zero action per episode also enters its statistics); here every step needs a real next frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vitra_jax.handspace import layout, rotations
from vitra_jax.handspace.geometry import split_extrinsics


@dataclasses.dataclass
class HandTrack:
    """World-space trajectory of one hand over T frames (VITRA-1M fields, wrist = wrist joint)."""

    wrist: np.ndarray  # (T, 3) wrist joint position, world
    orient: np.ndarray  # (T, 3, 3) wrist global orientation, world
    hand_pose: np.ndarray  # (T, 15, 3, 3) local finger rotations, right-hand MANO form
    joints: np.ndarray  # (T, 21, 3) OpenPose joints, world
    kept: np.ndarray  # (T,) bool, frame tracked
    beta: np.ndarray  # (10,) MANO shape

    def __len__(self) -> int:
        return len(self.kept)


@dataclasses.dataclass
class Targets:
    """States/actions with per-hand masks; shapes (..., 102) and (..., 2)."""

    state: np.ndarray
    state_mask: np.ndarray
    action: np.ndarray
    action_mask: np.ndarray


def sanitize_untracked(track: HandTrack) -> HandTrack:
    """A copy whose untracked frames hold zero positions and identity rotations (raw ones may be NaN)."""
    kept = track.kept.astype(bool)
    eye = np.eye(3)
    return HandTrack(
        wrist=np.where(kept[:, None], track.wrist, 0.0),
        orient=np.where(kept[:, None, None], track.orient, eye),
        hand_pose=np.where(kept[:, None, None, None], track.hand_pose, eye),
        joints=np.where(kept[:, None, None], track.joints, 0.0), kept=kept, beta=track.beta,
    )


def _take(track: HandTrack, frames: np.ndarray) -> HandTrack:
    """The frames `frames` of `track`."""
    return HandTrack(wrist=track.wrist[frames], orient=track.orient[frames], hand_pose=track.hand_pose[frames],
                     joints=track.joints[frames], kept=track.kept[frames], beta=track.beta)


def _in_camera(track: HandTrack, frames: np.ndarray, w2c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Wrist position (M, 3) and orientation (M, 3, 3) of `frames` in the cameras w2c (M, 4, 4)."""
    r, t = split_extrinsics(w2c)
    pos = np.einsum("mij,mj->mi", r, track.wrist[frames]) + t
    rot = r @ track.orient[frames]
    return pos, rot


def _hand_rotations(track: HandTrack, w2c: np.ndarray, cur: np.ndarray, nxt: np.ndarray):
    """Positions at `cur` and `nxt` (M, 3) and the matrices to convert to Euler angles: orientations at `cur`
    (M, 3, 3), deltas cur→nxt (M, 3, 3) and the finger poses of every frame of `track` (F·15, 3, 3)."""
    p0, r0 = _in_camera(track, cur, w2c)
    p1, r1 = _in_camera(track, nxt, w2c)
    fingers = np.asarray(track.hand_pose).reshape(-1, 3, 3)
    return p0, p1, [r0, rotations.relative_rotation(r0, r1), fingers]


def _euler_all(mats: list[np.ndarray]) -> list[np.ndarray]:
    """`matrix_to_euler` of each (M_i, 3, 3) array, in one call (scipy's per-call cost dominates)."""
    eul = rotations.matrix_to_euler(np.concatenate(mats))
    return np.split(eul, np.cumsum([len(m) for m in mats])[:-1])


def _hand_targets(track: HandTrack, p0: np.ndarray, p1: np.ndarray, euler: list[np.ndarray], cur: np.ndarray,
                  nxt: np.ndarray, nxt_ok: np.ndarray):
    """Per-hand 51-d states at `cur` and actions cur→nxt from `_hand_rotations`' positions and Euler angles."""
    rot, delta, fingers = euler
    fingers = fingers.reshape(len(track), 45)
    state = np.concatenate([p0, rot, fingers[cur]], axis=-1)
    action = np.concatenate([p1 - p0, delta, fingers[nxt]], axis=-1)
    state_ok = track.kept[cur].astype(bool)
    action_ok = state_ok & track.kept[nxt].astype(bool) & nxt_ok
    return state * state_ok[:, None], state_ok, action * action_ok[:, None], action_ok


def _assemble(hands: dict[str, HandTrack], w2c, cur, nxt, nxt_ok: dict[str, np.ndarray]) -> Targets:
    # Only the frames of cur ∪ nxt are sanitized, and their fingers converted once for both uses.
    frames, inv = np.unique(np.concatenate([cur, nxt]), return_inverse=True)
    cur, nxt = inv[: len(cur)], inv[len(cur):]
    tracks = [sanitize_untracked(_take(hands[h], frames)) for h in layout.HANDS]
    poses = [_hand_rotations(tr, w2c, cur, nxt) for tr in tracks]
    euler = _euler_all([m for _, _, mats in poses for m in mats])
    parts = [_hand_targets(tr, p0, p1, euler[3 * i: 3 * i + 3], cur, nxt, nxt_ok[h])
             for i, (h, tr, (p0, p1, _)) in enumerate(zip(layout.HANDS, tracks, poses))]
    return Targets(
        state=np.concatenate([p[0] for p in parts], -1),
        state_mask=np.stack([p[1] for p in parts], -1),
        action=np.concatenate([p[2] for p in parts], -1),
        action_mask=np.stack([p[3] for p in parts], -1),
    )


def chunk_targets(
    hands: dict[str, HandTrack], extrinsics: np.ndarray, t: int, n: int = layout.CHUNK_LEN,
    windows: dict[str, tuple[int, int]] | None = None,
) -> Targets:
    """State at t (102,) and the n actions t+k→t+k+1 (n, 102), all in the camera of frame t.

    `windows` optionally limits a hand to frames [s, e) (half-open, s ≤ t < e): its steps reaching a frame
    ≥ e are masked. A hand without a window uses the whole episode.
    """
    num = len(extrinsics)
    if not 0 <= t < num:
        raise ValueError(f"anchor frame {t} outside the episode of {num} frames")
    ends = {h: num for h in layout.HANDS}
    for hand, (s, e) in (windows or {}).items():
        if hand not in ends:
            raise ValueError(f"window for unknown hand {hand!r}; expected one of {layout.HANDS}")
        if not 0 <= s <= t < e <= num:
            raise ValueError(f"{hand} window [{s}, {e}) must lie in the episode of {num} frames and cover "
                             f"the anchor frame {t}")
        ends[hand] = e
    k = np.arange(t, t + n)
    cur, nxt = np.minimum(k, num - 1), np.minimum(k + 1, num - 1)
    w2c = np.repeat(np.asarray(extrinsics)[t][None], n, axis=0)
    out = _assemble(hands, w2c, cur, nxt, {h: (k + 1) < ends[h] for h in layout.HANDS})
    out.state, out.state_mask = out.state[0], out.state_mask[0]
    return out


def step_targets(hands: dict[str, HandTrack], extrinsics: np.ndarray) -> Targets:
    """Per frame k: state (T, 102) and one-step action k→k+1 (T, 102), each in its own camera k."""
    num = len(extrinsics)
    cur = np.arange(num)
    nxt = np.minimum(cur + 1, num - 1)
    ok = (cur + 1) < num
    return _assemble(hands, np.asarray(extrinsics, dtype=np.float64), cur, nxt, {h: ok for h in layout.HANDS})


def flip_horizontal(x: np.ndarray) -> np.ndarray:
    """States or actions (..., 102) of the horizontally mirrored video (camera x → −x).

    Positions negate x; every rotation R becomes M·R·M (M = diag(−1, 1, 1)), which for Euler xyz angles
    (a, b, c) is (a, −b, −c); finger poses stay (both hands use the right-hand form); hands swap
    (VITRA §3.4).
    """
    out = np.array(x, dtype=np.float64, copy=True)
    for h in layout.HANDS:
        out[..., layout.hand_part(h, layout.TRANS)][..., 0] *= -1
        out[..., layout.hand_part(h, layout.ROT)] *= [1.0, -1.0, -1.0]
    return layout.swap_hands(out)


def integrate_actions(state: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """States at steps 0..N (N+1, 102) from a state (102,) and N actions (N, 102) in the same camera.

    position_{k+1} = position_k + Δt, R_{k+1} = R_Δ · R_k (stored as Euler xyz), fingers_{k+1} = θ_{k+1};
    row 0 is the input state.
    """
    state = np.asarray(state, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    if state.shape != (layout.STATE_DIM,) or actions.ndim != 2 or actions.shape[1] != layout.ACTION_DIM:
        raise ValueError(f"expected state (102,) and actions (N, 102); got {state.shape} and {actions.shape}")
    out = np.zeros((len(actions) + 1, layout.STATE_DIM))
    out[0] = state
    for h in layout.HANDS:
        tr, rot, fin = (layout.hand_part(h, p) for p in (layout.TRANS, layout.ROT, layout.FINGERS))
        out[1:, tr] = state[tr] + np.cumsum(actions[:, tr], axis=0)
        deltas = rotations.euler_to_matrix(actions[:, rot])
        chain = np.empty_like(deltas)
        r = rotations.euler_to_matrix(state[rot])
        for k, d in enumerate(deltas):
            r = chain[k] = d @ r
        out[1:, rot] = rotations.matrix_to_euler(chain)  # one batched conversion: scipy's per call cost dominates
        out[1:, fin] = actions[:, fin]
    return out
