"""Synthetic VITRA-TeleData episodes written in the release's documented layout (`data/teleoperate_data.md`):
`{id}.h5` (meta, kinematics, observation/camera/intrinsics, state, action, mask) + `{id}.mp4`, frame t a
uniform grey of level `grey(t)` so tests can tell frames apart."""

import dataclasses
import pathlib

import cv2
import h5py
import numpy as np

WIDTH, HEIGHT = 160, 120
K = np.array([[97.5, 0.0, 81.5], [0.0, 98.0, 59.0], [0.0, 0.0, 1.0]])  # principal point off the centre
ARM_JOINTS = 7


def grey(t: int) -> int:
    return 10 * t + 5


@dataclasses.dataclass
class Written:
    """What was written for each hand: mount pose in the camera (T, 6), XHand joints (T, 12), tracked (T,)."""

    pose: dict
    joints: dict
    tracked: dict
    instruction: str


def write_teledata(folder: pathlib.Path, stem: str, n: int = 20, hands=("right",), seed: int = 0,
                   untracked=(), video_frames: int | None = None, instruction: str = "Pick up the red cup.",
                   drop_key: str | None = None) -> Written:
    """One episode with smooth random motion of `hands` (the others zero-filled and flagged absent);
    `untracked` frames have their hand mask off; `video_frames` writes a video of another length;
    `drop_key` leaves one dataset out of the file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    steps = np.arange(n)[:, None]
    pose, joints, tracked = {}, {}, {}
    for h in ("left", "right"):
        present = h in hands
        p = np.concatenate([rng.uniform(-0.2, 0.2, 3) + rng.normal(0, 0.01, 3) * steps,
                            rng.uniform(-1.5, 1.5, 3) + rng.normal(0, 0.05, 3) * steps], axis=1)
        j = rng.uniform(-0.3, 0.8, 12) + rng.normal(0, 0.02, 12) * steps
        pose[h], joints[h] = (p, j) if present else (np.zeros((n, 6)), np.zeros((n, 12)))
        tracked[h] = np.full(n, present)
        if present:
            tracked[h][list(untracked)] = False
    datasets = {
        "meta/instruction": instruction, "meta/video_path": f"{stem}.mp4", "meta/frame_count": n,
        "meta/fps": 30.0, "meta/has_left": "left" in hands, "meta/has_right": "right" in hands,
        "observation/camera/intrinsics": K,
    }
    for h in ("left", "right"):
        datasets |= {
            f"kinematics/{h}_ee_urdf_to_hand_mount": np.eye(4), f"kinematics/head_camera_to_{h}_arm_base": np.eye(4),
            f"state/{h}_arm_joint": rng.normal(size=(n, ARM_JOINTS)), f"state/{h}_hand_mount_pose": pose[h] + 1.0,
            f"state/{h}_hand_mount_pose_in_cam": pose[h], f"state/{h}_hand_joint": joints[h],
            f"action/{h}_arm_joint": rng.normal(size=(n, ARM_JOINTS)),
            f"action/{h}_hand_joint": joints[h] + 0.1,  # commanded targets lead the measured joints
            f"mask/{h}_arm": np.full(n, h in hands), f"mask/{h}_hand": tracked[h],
        }
    with h5py.File(folder / f"{stem}.h5", "w") as f:
        for key, value in datasets.items():
            if key != drop_key:
                f[key] = value
    writer = cv2.VideoWriter(str(folder / f"{stem}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30, (WIDTH, HEIGHT))
    for t in range(n if video_frames is None else video_frames):
        writer.write(np.full((HEIGHT, WIDTH, 3), grey(t), np.uint8))
    writer.release()
    return Written(pose, joints, tracked, instruction)
