"""One Episode plus its decoded frames -> one RLDS example (the dict matching features.py)."""

from __future__ import annotations

import json

import numpy as np

from vitra_jax.handspace import episode as episode_lib
from vitra_jax.handspace import geometry, instruction, layout, trajectory


def episode_example(ep: episode_lib.Episode, frames: np.ndarray, file_path: str, episode_id: int) -> dict:
    """RLDS example of `ep`; frames (T, H, W, 3) uint8 are the stored images (intrinsics rescaled to them)."""
    episode_lib.validate(ep)
    n = len(ep)
    if len(frames) != n:
        raise episode_lib.EpisodeError("length_mismatch", f"{len(frames)} frames for {n} annotated steps")
    height, width = frames.shape[1:3]
    k = geometry.resize_intrinsics(ep.intrinsics, width, height).astype(np.float32)
    tg = trajectory.step_targets(ep.hands, ep.extrinsics)
    tracks = {h: trajectory.sanitize_untracked(ep.hands[h]) for h in layout.HANDS}
    steps = []
    for t in range(n):
        caps = instruction.captions_at_frame(ep.text, ep.main_hand, t)
        alts = instruction.rephrasings_at_frame(ep.rephrasings, ep.main_hand, t)
        spans = instruction.caption_spans_at_frame(ep.text, ep.main_hand, t)
        hands = {
            h: {
                "wrist": tracks[h].wrist[t].astype(np.float32),
                "orient": tracks[h].orient[t].astype(np.float32),
                "hand_pose": tracks[h].hand_pose[t].astype(np.float32),
                "joints": tracks[h].joints[t].astype(np.float32),
                "kept": bool(tracks[h].kept[t]),
            }
            for h in layout.HANDS
        }
        last = t == n - 1
        steps.append({
            "observation": {
                "image": frames[t],
                "state": tg.state[t].astype(np.float32),
                "state_mask": tg.state_mask[t],
            },
            "action": tg.action[t].astype(np.float32),
            "action_mask": tg.action_mask[t],
            "discount": 1.0,
            "reward": float(last),
            "is_first": t == 0,
            "is_last": last,
            "is_terminal": last,
            "language_instruction": instruction.format_instruction(caps["left"], caps["right"]),
            "language_instruction_left": caps["left"] or "",
            "language_instruction_right": caps["right"] or "",
            "language_rephrasings_left": alts["left"],
            "language_rephrasings_right": alts["right"],
            "language_interval_left": np.asarray(spans["left"] or (0, 0), np.int32),
            "language_interval_right": np.asarray(spans["right"] or (0, 0), np.int32),
            "hands": hands,
            "camera": {"extrinsics": ep.extrinsics[t].astype(np.float32), "intrinsics": k},
            "frame_index": int(ep.frame_index[t]),
        })
    meta = {
        "file_path": file_path, "episode_id": episode_id, "video": ep.video, "video_name": ep.video_name,
        "source": ep.source, "frame_start": int(ep.frame_index[0]), "frame_end": int(ep.frame_index[-1]),
        "fps": ep.fps, "camera_motion": ep.camera_motion, "main_hand": ep.main_hand,
        "labeler_versions": json.dumps(ep.labeler_versions, sort_keys=True),
        "beta_left": ep.hands["left"].beta.astype(np.float32),
        "beta_right": ep.hands["right"].beta.astype(np.float32),
    }
    return {"steps": steps, "episode_metadata": meta}
