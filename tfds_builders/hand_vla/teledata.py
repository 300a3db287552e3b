"""VITRA-TeleData robot episodes (the release's fine-tuning data) read as hand episodes.

Input (`microsoft/VITRA-TeleData`, format `data/teleoperate_data.md` of the release): one `{id}.h5` per episode
with its head-camera video `{id}.mp4` beside it (or at the h5's `meta/video_path`, relative to the h5's folder).
Realman arms carry XHand hands; the head camera does not move within an episode.

Each frame becomes a step of a hand episode:
- the camera frame is the world frame (identity extrinsics, `camera_motion` 'static');
- a hand's wrist position and orientation are its `state/{hand}_hand_mount_pose_in_cam` (`[x, y, z]` metres and
  an axis-angle vector; the mount frame is aligned with the human wrist axes, release Figure 1);
- its 15 MANO finger rotations come from the 12 measured XHand joints `state/{hand}_hand_joint` through the
  release's table (`handspace.robots.xhand_hand_pose`; unmapped joints are identity rotations, and, as in the
  release, all 51 dims of a tracked hand are supervised);
- a hand is tracked at frame t when `meta/has_{hand}` and `mask/{hand}_arm` and `mask/{hand}_hand` are all true;
- the caption `meta/instruction` belongs to the main hand (right when present) for the whole episode.
Actions follow from consecutive states exactly as for human hands (wrist deltas in the camera of the anchor
frame, absolute finger angles of the next frame); the commanded targets under `action/` are not read, so human
and robot chunks mean the same thing. The release leaves all of this open (its robot loader is a stub).

Intrinsics: the episode format takes the principal point at the image centre (as the release's hand data do);
the stored matrix keeps the camera's focal lengths (so the FoV is exact) and moves the principal point to the
centre, a shift of the RealSense's few pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfds_builders.hand_vla import splits, video
from vitra_jax.handspace import episode as episode_lib
from vitra_jax.handspace import layout, mano, robots, rotations
from vitra_jax.handspace.trajectory import HandTrack

SOURCE = "teledata"


def list_teledata(manual_dir: Path) -> list[str]:
    """Every episode file `*.h5` under manual_dir (any depth), sorted."""
    return sorted(str(p) for p in Path(manual_dir).rglob("*.h5"))


def teledata_group(h5: str) -> str:
    """The split key of an episode: its id (each episode has a video of its own)."""
    return splits.group_key(SOURCE, Path(h5).stem)


def _read(f, key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    if key not in f:
        raise episode_lib.EpisodeError("bad_annotation", f"missing {key}")
    value = np.asarray(f[key][()])
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        want = "(" + ", ".join("T" if s is None else str(s) for s in shape) + ")"
        raise episode_lib.EpisodeError("bad_annotation", f"{key} has shape {value.shape}, expected {want}")
    return value


def _text(value) -> str:
    value = value.item() if isinstance(value, np.ndarray) else value
    return value.decode() if isinstance(value, bytes) else str(value)


def _find_video(h5: Path, video_path: str) -> str:
    sibling = h5.with_suffix(".mp4")
    if sibling.exists() or not video_path:
        return str(sibling)
    return str(h5.parent / video_path)


def _hand(f, hand: str, n: int) -> HandTrack:
    pose = _read(f, f"state/{hand}_hand_mount_pose_in_cam", (n, 6)).astype(np.float64)
    joints = _read(f, f"state/{hand}_hand_joint", (n, robots.NUM_XHAND_JOINTS)).astype(np.float64)
    kept = (bool(_read(f, f"meta/has_{hand}", ())) & _read(f, f"mask/{hand}_arm", (n,)).astype(bool)
            & _read(f, f"mask/{hand}_hand", (n,)).astype(bool))
    # Untracked frames become zeros whatever the file holds there; NaN in a tracked one fails validation.
    pose, joints = np.where(kept[:, None], pose, 0.0), np.where(kept[:, None], joints, 0.0)
    wrist, orient = pose[:, :3], rotations.axis_angle_to_matrix(pose[:, 3:])
    hand_pose = robots.xhand_hand_pose(joints)
    return HandTrack(wrist=wrist, orient=orient, hand_pose=hand_pose,
                     joints=mano.skeleton_joints(wrist, orient, hand_pose, hand), kept=kept, beta=np.zeros(10))


def read_teledata(h5: str) -> episode_lib.Episode:
    """The hand episode of one TeleData file (video not decoded). EpisodeError for a malformed file."""
    import h5py

    path = Path(h5)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise episode_lib.EpisodeError("unreadable_input", f"{h5}: {e}") from None
    with f:
        n = int(_read(f, "meta/frame_count", ()))
        if n < 1:
            raise episode_lib.EpisodeError("bad_annotation", f"meta/frame_count is {n}")
        hands = {h: _hand(f, h, n) for h in layout.HANDS}
        k = _read(f, "observation/camera/intrinsics", (3, 3)).astype(np.float64)
        instruction = _text(_read(f, "meta/instruction", ()))
        fps = float(_read(f, "meta/fps", ()))
        video_path = _text(f["meta/video_path"][()]) if "meta/video_path" in f else ""
    main = "right" if hands["right"].kept.any() else "left"
    ep = episode_lib.Episode(
        video=_find_video(path, video_path), video_name=path.stem, frame_index=np.arange(n),
        extrinsics=np.broadcast_to(np.eye(4), (n, 4, 4)).copy(), intrinsics=k, hands=hands,
        text={main: [(instruction, (0, n))]}, main_hand=main, fps=fps, camera_motion="static",
        source=SOURCE)
    episode_lib.validate(ep)
    return ep


def load_teledata(h5: str, short_side: int) -> tuple[episode_lib.Episode, np.ndarray]:
    """(Episode, RGB frames) of one TeleData episode; its intrinsics re-centred for the episode format.
    A video whose frame count differs from `meta/frame_count` is not synchronised with the file: skipped."""
    ep = read_teledata(h5)
    if not Path(ep.video).is_file():
        raise episode_lib.EpisodeError("missing_video", ep.video)
    width, height, count = video.container_info(ep.video)
    if count != len(ep):
        raise episode_lib.EpisodeError("length_mismatch", f"{ep.video} has {count} frames, {h5} {len(ep)}")
    frames = video.read_frames(ep.video, ep.frame_index, short_side)
    k = ep.intrinsics.copy()
    k[0, 2], k[1, 2] = width / 2.0, height / 2.0
    ep.intrinsics = k
    return ep, frames
