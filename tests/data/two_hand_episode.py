"""A synthetic two-hand episode in the release's raw form, and its hand_vla RLDS steps after a real
TFDS encode/decode round trip (shared by the chunk and sampling tests)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from scipy.spatial.transform import Rotation

from tfds_builders.hand_vla import examples, features
from vitra_jax.data import chunks
from vitra_jax.handspace.episode import Episode
from vitra_jax.handspace.trajectory import HandTrack

IMAGE_HW = (24, 32)


def _rotations(rng, shape, scale):
    """Small random rotation matrices (Euler angles stay far from the ±π wrap)."""
    return Rotation.from_euler("xyz", rng.normal(0, scale, (*shape, 3)).reshape(-1, 3)).as_matrix().reshape(
        *shape, 3, 3)


def raw_episode(num: int, main_hand: str, untracked: dict[str, list[int]], text: dict, text_rephrase: dict,
                seed: int = 0) -> dict:
    """Fields named as in the released VITRA-1M episode dicts; untracked frames hold NaN like raw labels."""
    rng = np.random.default_rng(seed)
    raw = {"anno_type": main_hand, "text": text, "text_rephrase": text_rephrase}
    ext = np.repeat(np.eye(4)[None], num, 0)
    ext[:, :3, :3] = _rotations(rng, (num,), 0.1)
    ext[:, :3, 3] = np.cumsum(rng.normal(0, 0.01, (num, 3)), 0)
    raw["extrinsics"] = ext
    for hand in ("left", "right"):
        kept = np.ones(num, bool)
        kept[untracked.get(hand, [])] = False
        wrist = np.cumsum(rng.normal(0, 0.02, (num, 3)), 0) + [0.1 if hand == "right" else -0.1, 0, 0.5]
        h = {
            "transl_worldspace": wrist,
            "global_orient_worldspace": _rotations(rng, (num,), 0.2),
            "hand_pose": _rotations(rng, (num, 15), 0.3),
            "joints_worldspace": wrist[:, None] + rng.normal(0, 0.03, (num, 21, 3)),
            "kept_frames": kept.astype(np.int64),
            "beta": np.zeros(10),
        }
        for key in ("transl_worldspace", "global_orient_worldspace", "hand_pose", "joints_worldspace"):
            h[key][~kept] = np.nan
        raw[hand] = h
    return raw


def rlds_steps(raw: dict) -> dict:
    """`raw` built as an RLDS example, serialized with the hand_vla features, decoded by tf.data, stacked."""
    return chunks.stack_steps(tfds.as_numpy(decoded_example(raw))["steps"])


def decoded_example(raw: dict, numpy_path: bool = False):
    """The hand_vla example of `raw` after serialization, decoded as tf.data (default) or as numpy."""
    num = len(raw["extrinsics"])
    hands = {
        h: HandTrack(wrist=raw[h]["transl_worldspace"], orient=raw[h]["global_orient_worldspace"],
                     hand_pose=raw[h]["hand_pose"], joints=raw[h]["joints_worldspace"],
                     kept=raw[h]["kept_frames"].astype(bool), beta=raw[h]["beta"])
        for h in ("left", "right")
    }
    ep = Episode(video="synthetic.mp4", video_name="synthetic", frame_index=np.arange(num),
                 extrinsics=raw["extrinsics"], intrinsics=np.array([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]]),
                 hands=hands, text=raw["text"], main_hand=raw["anno_type"], rephrasings=raw["text_rephrase"])
    example = examples.episode_example(ep, np.zeros((num, *IMAGE_HW, 3), np.uint8), "synthetic", 0)
    feats = features.hand_vla_features()
    serialized = feats.serialize_example(example)
    return feats.deserialize_example_np(serialized) if numpy_path else feats.deserialize_example(serialized)
