"""The hand_vla RLDS features, defined once (OXE template fields plus world-space hands and cameras)."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from vitra_jax.handspace import layout

_f32 = np.float32


def _tensor(shape: tuple[int, ...], doc: str, dtype=_f32) -> tfds.features.Tensor:
    return tfds.features.Tensor(shape=shape, dtype=dtype, doc=doc)


def _hand(side: str) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict({
        "wrist": _tensor((3,), f"{side} wrist joint position, world frame (m)."),
        "orient": _tensor((3, 3), f"{side} wrist global orientation matrix, world frame."),
        "hand_pose": _tensor((15, 3, 3), f"{side} 15 MANO local finger rotations (right-hand form)."),
        "joints": _tensor((21, 3), f"{side} 21 OpenPose-order joints, world frame (m)."),
        "kept": tfds.features.Scalar(dtype=np.bool_, doc=f"{side} tracked; if not, poses are zero/identity."),
    })


def hand_vla_features() -> tfds.features.FeaturesDict:
    """FeaturesDict of one episode: `steps` (per frame) and `episode_metadata`."""
    d = layout.STATE_DIM
    step = {
        "observation": tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), dtype=np.uint8, encoding_format="jpeg",
                                         doc="Video frame, resized to the config's short side, RGB."),
            "state": _tensor((d,), "102-d hand state in this frame's camera: per hand [pos 3, euler xyz 3, "
                                   "finger euler 45], left 0:51, right 51:102; zero where masked."),
            "state_mask": _tensor((2,), "(left, right) state valid = hand tracked.", np.bool_),
        }),
        "action": _tensor((d,), "102-d one-step action to the next frame in this frame's camera: per hand "
                                "[Δpos 3, euler(R_next R_curᵀ) 3, next fingers 45]; zero where masked."),
        "action_mask": _tensor((2,), "(left, right) valid = tracked here and next.", np.bool_),
        "discount": tfds.features.Scalar(dtype=_f32, doc="Always 1."),
        "reward": tfds.features.Scalar(dtype=_f32, doc="1 on the last step (demonstration), else 0."),
        "is_first": tfds.features.Scalar(dtype=np.bool_, doc="First step of the episode."),
        "is_last": tfds.features.Scalar(dtype=np.bool_, doc="Last step of the episode."),
        "is_terminal": tfds.features.Scalar(dtype=np.bool_, doc="Last step (demonstrations end in success)."),
        "language_instruction": tfds.features.Text(
            doc="'Left hand: <text> Right hand: <text>'; an idle hand reads 'None.'"),
        "language_instruction_left": tfds.features.Text(doc="Left-hand caption for this frame, '' if idle."),
        "language_instruction_right": tfds.features.Text(doc="Right-hand caption of this frame, '' if idle."),
        "language_rephrasings_left": tfds.features.Sequence(
            tfds.features.Text(), doc="Alternative wordings of the left-hand caption (may be empty)."),
        "language_rephrasings_right": tfds.features.Sequence(
            tfds.features.Text(), doc="Alternative wordings of the right-hand caption (may be empty)."),
        "language_interval_left": _tensor(
            (2,), "Half-open [start, end) episode frames of the left-hand caption; (0, 0) if idle.", np.int32),
        "language_interval_right": _tensor(
            (2,), "Half-open [start, end) episode frames of the right-hand caption; (0, 0) if idle.", np.int32),
        "hands": tfds.features.FeaturesDict({"left": _hand("Left"), "right": _hand("Right")}),
        "camera": tfds.features.FeaturesDict({
            "extrinsics": _tensor((4, 4), "World→camera transform of this frame."),
            "intrinsics": _tensor((3, 3), "Pinhole intrinsics in pixels of the stored image."),
        }),
        "frame_index": tfds.features.Scalar(dtype=np.int64, doc="Frame number in the source video."),
    }
    meta = {
        "file_path": tfds.features.Text(doc="Annotation file (or generator id) of the episode."),
        "episode_id": tfds.features.Scalar(dtype=np.int64, doc="Index of the episode in the sorted inputs."),
        "video": tfds.features.Text(doc="Source video path as given in the inputs."),
        "video_name": tfds.features.Text(doc="Source video name."),
        "source": tfds.features.Text(doc="Sub-dataset name (e.g. Ego4D) or 'demo'."),
        "frame_start": tfds.features.Scalar(dtype=np.int64, doc="First source-video frame of the episode."),
        "frame_end": tfds.features.Scalar(dtype=np.int64, doc="Last source-video frame (inclusive)."),
        "fps": tfds.features.Scalar(dtype=_f32, doc="Source video frame rate."),
        "camera_motion": tfds.features.Text(doc="'static', 'moving' or 'unknown'."),
        "main_hand": tfds.features.Text(doc="'left' or 'right': the annotated main hand."),
        "labeler_versions": tfds.features.Text(doc="JSON {stage: version} of the labeling tools."),
        "beta_left": _tensor((10,), "Left MANO shape."),
        "beta_right": _tensor((10,), "Right MANO shape."),
    }
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset(step),
        "episode_metadata": tfds.features.FeaturesDict(meta),
    })
