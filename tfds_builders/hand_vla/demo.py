"""Procedural demo episodes: smooth two-hand trajectories rendered as projected skeletons on a texture.

Deterministic (seeded per episode), no inputs. The main hand reaches toward one of four coloured targets
drawn in the image, so a policy can read the goal from pixels; the other hand drifts and is idle in the text.
"""

from __future__ import annotations

import cv2
import numpy as np

from vitra_jax.handspace import episode as episode_lib
from vitra_jax.handspace import geometry, mano, rotations
from vitra_jax.handspace.trajectory import HandTrack

NUM_STEPS = 24
IMAGE_SIZE = 128
FOCAL = 80.0
TARGETS = {  # name -> (camera-frame position m, BGR colour)
    "red cup": ((0.12, 0.05, 0.5), (40, 40, 220)),
    "green box": ((-0.12, 0.06, 0.5), (40, 180, 40)),
    "blue bowl": ((0.1, -0.08, 0.55), (200, 80, 30)),
    "yellow sponge": ((-0.1, -0.07, 0.55), (40, 210, 230)),
}
HAND_COLOURS = {"left": (255, 160, 60), "right": (60, 60, 255)}


def _intrinsics() -> np.ndarray:
    c = IMAGE_SIZE / 2
    return np.array([[FOCAL, 0, c], [0, FOCAL, c], [0, 0, 1]])


def _track(rng: np.random.Generator, start, end, hand: str) -> HandTrack:
    s = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, NUM_STEPS))[:, None]  # smooth ease-in/out
    wrist = np.asarray(start) + s * (np.asarray(end) - np.asarray(start))
    yaw = rng.uniform(-0.4, 0.4) + 0.5 * s[:, 0]
    # Palm faces the camera with fingers pointing up the image (rest fingers are +x; image up is −y).
    orient = rotations.euler_to_matrix(np.stack([0.3 * s[:, 0], 0.2 * yaw, yaw - np.pi / 2], -1))
    curl = 1.2 * s[:, 0] ** 2  # fingers close as the hand arrives
    pose = np.zeros((NUM_STEPS, 15, 3))
    pose[:, :12, 2] = curl[:, None]
    pose[:, 12:, 1] = 0.4 * curl[:, None]
    hand_pose = rotations.axis_angle_to_matrix(pose)
    joints = mano.skeleton_joints(wrist, orient, hand_pose, hand)
    return HandTrack(wrist=wrist, orient=orient, hand_pose=hand_pose, joints=joints,
                     kept=np.ones(NUM_STEPS, bool), beta=np.zeros(10))


def _background(rng: np.random.Generator) -> np.ndarray:
    noise = rng.uniform(0, 255, (IMAGE_SIZE // 8, IMAGE_SIZE // 8, 3)).astype(np.uint8)
    tex = cv2.resize(noise, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_CUBIC)
    return (0.35 * tex + 0.65 * np.array([150, 140, 130])).astype(np.uint8)


def _render(bg: np.ndarray, ep: episode_lib.Episode, target: str, world_target: np.ndarray) -> np.ndarray:
    k = ep.intrinsics
    frames = []
    for t in range(len(ep)):
        img = bg.copy()
        pos = geometry.world_to_camera_points(world_target, ep.extrinsics[t])
        u, v = geometry.project(pos, k).round().astype(int)
        colour = TARGETS[target][1]
        cv2.rectangle(img, (u - 6, v - 6), (u + 6, v + 6), colour, -1)
        for hand in ("left", "right"):
            cam = geometry.world_to_camera_points(ep.hands[hand].joints[t], ep.extrinsics[t])
            px = geometry.project(cam, k).round().astype(int)
            for a, b in mano.OPENPOSE_BONES:
                cv2.line(img, tuple(px[a]), tuple(px[b]), HAND_COLOURS[hand], 1, cv2.LINE_AA)
            for p in px:
                cv2.circle(img, tuple(p), 1, (255, 255, 255), -1)
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def video_name(index: int) -> str:
    return f"demo_{index:03d}"


def demo_episode(index: int, seed: int = 0) -> tuple[episode_lib.Episode, np.ndarray]:
    """Episode `index` of the demo set and its rendered frames (T, 128, 128, 3)."""
    rng = np.random.default_rng([seed, index])
    main = ("left", "right")[index % 2]
    target = list(TARGETS)[index % len(TARGETS)]
    # Camera pans slowly in odd-numbered pairs of episodes, so anchoring actions in each frame matters.
    pan = 0.004 * ((index // 2) % 2)
    extrinsics = np.repeat(np.eye(4)[None], NUM_STEPS, 0)
    zeros = np.zeros(NUM_STEPS)
    yaw = pan * np.arange(NUM_STEPS)
    extrinsics[:, :3, :3] = rotations.euler_to_matrix(np.stack([zeros, yaw, zeros], -1))
    world_target = geometry.camera_to_world_points(np.asarray(TARGETS[target][0]), extrinsics[0])
    hands = {}
    for hand in ("left", "right"):
        side = -1.0 if hand == "left" else 1.0
        start = np.array([0.1 * side, 0.12, 0.45]) + rng.normal(0, 0.01, 3)
        end = world_target if hand == main else start + rng.normal(0, 0.02, 3)
        hands[hand] = _track(rng, start, end, hand)
    ep = episode_lib.Episode(
        video="", video_name=video_name(index), frame_index=np.arange(NUM_STEPS), extrinsics=extrinsics,
        intrinsics=_intrinsics(), hands=hands, text={main: [(f"Reach for the {target}.", (0, NUM_STEPS))]},
        main_hand=main, fps=10.0, camera_motion="moving" if pan else "static",
        labeler_versions={"demo": "1"}, source="demo",
    )
    return ep, _render(_background(rng), ep, target, world_target)
