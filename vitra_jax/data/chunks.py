"""Training samples from hand_vla RLDS episodes, as the release's `get_item_frame` builds them.

The stored per-step `action` is expressed in each frame's own camera; a chunk needs every step in the camera
of its anchor frame (VITRA §III-A), so samples are recomputed from the stored world-space hands and camera
extrinsics with `handspace.trajectory.chunk_targets`. Per sample (release §3.2, §3.3, §9.3):
  - the main hand uses the whole episode and its first caption;
  - the other hand uses the caption whose interval [s, e) covers t, and its targets are limited to that
    window (steps reaching a frame ≥ e are masked; its state at t lies inside the window, so only `kept[t]`
    decides it); with no covering caption its text is "None." and its window is the whole episode;
  - each text is drawn with the caller's `np.random.Generator` among the caption and its rephrasings (the
    caption itself without one), stripped, '.' appended.
The caption interval comes from the per-step `language_interval_<hand>` field; datasets written before it
existed fall back to the maximal run of frames with the same caption (which merges two adjacent captions
with identical text).

Deliberate differences from the release (see docs/data.md): a chunk step whose next frame lies past the
episode or window end is masked (the release keeps one zero-motion step there); the secondary hand's
rephrasings are those of the covering caption (the release indexes them by position among captions with the
same text).
Numpy only: the input is one episode as returned by `tfds.as_numpy` (or `tfds.data_source`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vitra_jax.handspace import geometry, instruction, layout, mano
from vitra_jax.handspace.trajectory import HandTrack, chunk_targets


def stack_steps(steps) -> dict:
    """Nested step dicts (an iterable, e.g. a tfds `steps` dataset as numpy) -> one nested dict of (T, ...) arrays.

    Leaves whose per-step shapes differ (e.g. caption rephrasings, whose count changes where a caption
    interval starts or ends) become object arrays of length T holding each step's array. A dict whose
    leaves are already stacked is returned unchanged."""
    if isinstance(steps, dict):
        return steps
    steps = list(steps)
    if not steps:
        raise ValueError("episode has no steps")

    def stack(items):
        if isinstance(items[0], dict):
            return {k: stack([it[k] for it in items]) for k in items[0]}
        arrays = [np.asarray(it) for it in items]
        if len({a.shape for a in arrays}) == 1:
            return np.stack(arrays)
        ragged = np.empty(len(arrays), dtype=object)
        ragged[:] = arrays
        return ragged

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


def caption_window(steps: dict, hand: str, t: int) -> tuple[int, int] | None:
    """Half-open [s, e) frames of `hand`'s caption stored at step t, clipped to the episode; None if idle."""
    num = len(steps["is_first"])
    key = f"language_interval_{hand}"
    if key in steps:
        s, e = (int(v) for v in steps[key][t])
        return (s, min(e, num)) if e > s else None
    captions = [_text(c) for c in steps[f"language_instruction_{hand}"]]
    if not captions[t].strip():
        return None
    s, e = t, t + 1
    while s > 0 and captions[s - 1] == captions[t]:
        s -= 1
    while e < num and captions[e] == captions[t]:
        e += 1
    return s, e


def palm_path(track: HandTrack, w2c: np.ndarray, t: int) -> np.ndarray:
    """Palm centre (mean of OpenPose joints 0, 2, 5, 9, 13, 17) over the tracked frames t..end, (M, 3) in the
    camera w2c (4, 4) (VITRA §3.4: the trajectory the augmentation keeps in view)."""
    frames = t + np.flatnonzero(np.asarray(track.kept[t:], bool))
    palms = np.asarray(track.joints, np.float64)[frames][:, list(mano.PALM_JOINTS)].mean(axis=1)
    return geometry.world_to_camera_points(palms.reshape(-1, 3), w2c).astype(np.float32)


def frame_sample(steps: dict, t: int, *, main_hand: str = "right", rng: np.random.Generator | None = None,
                 tracks: dict[str, HandTrack] | None = None, image: np.ndarray | None = None,
                 chunk_len: int = layout.CHUNK_LEN) -> dict:
    """The policy sample anchored at frame t of an episode (`steps` stacked over T, see `stack_steps`).

    `image` replaces `steps["observation"]["image"][t]` (then `steps` need not hold images; the intrinsics
    are rescaled to its size); `tracks` caches `episode_tracks(steps)`. Returns image (H, W, 3) uint8, instruction / text_left / text_right /
    main_hand (str), fov (2,) radians, state (102,), state_mask (102,), actions (chunk_len, 102),
    action_mask (chunk_len, 102), intrinsics (3, 3), palm_path (M, 3) of the main hand in the camera of t;
    arrays float32 except the image.
    """
    if main_hand not in layout.HANDS:
        raise ValueError(f"main_hand must be one of {layout.HANDS}, got {main_hand!r}")
    if image is None:
        observation = steps.get("observation", {})
        if "image" not in observation:
            raise ValueError("steps hold no observation/image; pass the decoded frame as image=")
        image = observation["image"][t]
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    tracks = tracks if tracks is not None else episode_tracks(steps)
    texts, windows = {}, {}
    for hand in layout.HANDS:
        caption = _text(steps[f"language_instruction_{hand}"][t])
        alts = steps.get(f"language_rephrasings_{hand}")
        texts[hand] = instruction.choose_text(caption, [] if alts is None else [_text(a) for a in alts[t]], rng)
        window = caption_window(steps, hand, t) if hand != main_hand else None
        if window is not None:
            windows[hand] = window
    extrinsics = steps["camera"]["extrinsics"]
    tg = chunk_targets(tracks, extrinsics, t, chunk_len, windows=windows)
    # Stored intrinsics describe the stored frame (principal point at its centre); a frame passed at
    # another size of the same view gets them rescaled, one of another shape is refused.
    k = np.asarray(steps["camera"]["intrinsics"][t], np.float64)
    h, w = image.shape[:2]
    if abs((w / h) / (k[0, 2] / k[1, 2]) - 1.0) > 0.02:
        raise ValueError(f"image {w}x{h} does not have the aspect of the stored view "
                         f"{2 * k[0, 2]:.0f}x{2 * k[1, 2]:.0f} that its intrinsics describe")
    k = geometry.resize_intrinsics(k, w, h)
    return {
        "image": image,
        "instruction": instruction.format_instruction(texts["left"], texts["right"]),
        "text_left": texts["left"],
        "text_right": texts["right"],
        "main_hand": main_hand,
        "fov": np.asarray(geometry.fov_from_intrinsics(k, w, h), np.float32),
        "state": tg.state.astype(np.float32),
        "state_mask": layout.expand_hand_mask(tg.state_mask).astype(np.float32),
        "actions": tg.action.astype(np.float32),
        "action_mask": layout.expand_hand_mask(tg.action_mask).astype(np.float32),
        "intrinsics": np.asarray(k, np.float32),
        "palm_path": palm_path(tracks[main_hand], extrinsics[t], t),
    }


def episode_samples(episode: dict, chunk_len: int = layout.CHUNK_LEN,
                    rng: np.random.Generator | None = None) -> Iterator[dict]:
    """One sample per frame of an RLDS episode (`{'steps': ..., 'episode_metadata': ...}`)."""
    steps = stack_steps(episode["steps"])
    tracks = episode_tracks(steps)
    main_hand = _text(episode["episode_metadata"]["main_hand"])
    for t in range(len(steps["is_first"])):
        yield frame_sample(steps, t, main_hand=main_hand, rng=rng, tracks=tracks, chunk_len=chunk_len)
