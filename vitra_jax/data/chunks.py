"""Training samples from hand_vla RLDS episodes: a 16-step chunk re-anchored in the camera of frame t.

The stored per-step `action` is expressed in each frame's own camera; a chunk needs every step in the camera
of its anchor frame (VITRA §III-A), so samples are recomputed from the stored world-space hands and camera
extrinsics with `handspace.trajectory.chunk_targets`. Numpy only: the input is one episode as returned by
`tfds.as_numpy` (or `tfds.data_source`), the output a dict of arrays per anchor frame.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from vitra_jax.handspace import geometry, layout
from vitra_jax.handspace.trajectory import HandTrack, chunk_targets


def stack_steps(steps) -> dict:
    """Nested step dicts (an iterable, e.g. a tfds `steps` dataset as numpy) -> one nested dict of (T, ...) arrays.

    A dict whose leaves are already stacked arrays is returned unchanged."""
    if isinstance(steps, dict):
        return steps
    steps = list(steps)
    if not steps:
        raise ValueError("episode has no steps")

    def stack(items):
        if isinstance(items[0], dict):
            return {k: stack([it[k] for it in items]) for k in items[0]}
        return np.stack([np.asarray(it) for it in items])

    return stack(steps)


def episode_tracks(steps: dict) -> dict[str, HandTrack]:
    """World-space `HandTrack`s of both hands from an episode's `steps` (arrays stacked over T)."""
    hands = steps["hands"]
    return {
        h: HandTrack(wrist=hands[h]["wrist"], orient=hands[h]["orient"], hand_pose=hands[h]["hand_pose"],
                     joints=hands[h]["joints"], kept=hands[h]["kept"], beta=np.zeros(10))
        for h in layout.HANDS
    }


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def frame_sample(steps: dict, t: int, tracks: dict[str, HandTrack] | None = None,
                 chunk_len: int = layout.CHUNK_LEN) -> dict[str, np.ndarray]:
    """The policy sample anchored at frame t of an episode.

    Returns image (H, W, 3) uint8, instruction (str), fov (2,) radians, state (102,), state_mask (102,),
    actions (chunk_len, 102), action_mask (chunk_len, 102), intrinsics (3, 3), all float32 except the image.
    """
    tracks = tracks if tracks is not None else episode_tracks(steps)
    tg = chunk_targets(tracks, steps["camera"]["extrinsics"], t, chunk_len)
    image = steps["observation"]["image"][t]
    k = steps["camera"]["intrinsics"][t]
    h, w = image.shape[:2]
    return {
        "image": image,
        "instruction": _text(steps["language_instruction"][t]),
        "fov": np.asarray(geometry.fov_from_intrinsics(k, w, h), np.float32),
        "state": tg.state.astype(np.float32),
        "state_mask": layout.expand_hand_mask(tg.state_mask).astype(np.float32),
        "actions": tg.action.astype(np.float32),
        "action_mask": layout.expand_hand_mask(tg.action_mask).astype(np.float32),
        "intrinsics": np.asarray(k, np.float32),
    }


def episode_samples(episode: dict, chunk_len: int = layout.CHUNK_LEN) -> Iterator[dict[str, np.ndarray]]:
    """One sample per frame of an RLDS episode (`{'steps': ..., 'episode_metadata': ...}`)."""
    steps = stack_steps(episode["steps"])
    tracks = episode_tracks(steps)
    for t in range(len(steps["is_first"])):
        yield frame_sample(steps, t, tracks, chunk_len)
