"""The labeling pipeline's settings in one ml_collections recipe: every stage's backend and thresholds.

    python -m preprocess.run --input VIDEOS --output OUT                      # this file's defaults
    python -m preprocess.run --input VIDEOS --output OUT --config my_recipe.py --config.video.max_width=640

A recipe file defines `get_config()` (start from `preprocess.config.get_config()` and change fields).
Field groups hold plain values; each stage turns its group into its own settings object at one boundary
(`preprocess.graph`). Settings that change results are saved with the run (`config.json` in the output
folder) and a rerun into the same folder must use the same ones; how the work is spread (`--workers`,
`--runner`) is not part of it.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from preprocess.camera_motion import CameraMotionConfig
from preprocess.segment import SegmentConfig

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".MP4", ".MOV")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # Sub-dataset name written into each episode's `source` (the builder's split key is source/video).
    c.dataset = "videos"

    c.video = ml_collections.ConfigDict()
    c.video.clip_seconds = 20.0  # VITRA §III: long videos are cut into overlapping 20 s clips
    c.video.overlap_seconds = 2.0
    c.video.max_width = ml_collections.FieldReference(None, field_type=int)  # downscale frames (speed)
    c.video.max_frames = ml_collections.FieldReference(None, field_type=int)  # only the first N frames

    c.intrinsics = ml_collections.ConfigDict()
    c.intrinsics.backend = "fov_prior"  # fov_prior | droidcalib | geocalib | moge | ego4d_omnidir
    c.intrinsics.fov_x_deg = 90.0  # fov_prior: horizontal field of view of the pinhole frames
    c.intrinsics.path = ""  # reader backends: file per video, '{video_id}' is replaced

    # Background flow thresholds: the fields of preprocess.camera_motion.CameraMotionConfig.
    c.camera_motion = ml_collections.ConfigDict(dataclasses.asdict(CameraMotionConfig()))

    c.hands = ml_collections.ConfigDict()
    c.hands.backend = "mediapipe"  # mediapipe | precomputed | wilor | hawor
    c.hands.path = ""  # precomputed / wilor / hawor: result file per video, '{video_id}' is replaced
    c.hands.mano_dir = ""  # folder with MANO_RIGHT.pkl
    c.hands.options = ml_collections.ConfigDict()  # extra keyword arguments of the backend
    c.hands.torch_threads = 1  # fixed, so fits are bitwise equal whatever the machine or runner
    c.hands.num_cpus = 1.0  # Ray resources of one hand-model actor
    c.hands.actors = 1  # Ray: hand-model actors (e.g. one per GPU)
    c.hands.num_gpus = 0.0

    c.camera_pose = ml_collections.ConfigDict()
    # auto: identity poses for a static camera, `moving_backend` for a moving one.
    c.camera_pose.backend = "auto"  # auto | static | megasam | hawor_slam
    c.camera_pose.moving_backend = "camera_frame"  # megasam | hawor_slam | camera_frame (no ego-motion)
    c.camera_pose.path = ""  # megasam / hawor_slam: result file per video, '{video_id}' is replaced
    c.camera_pose.megasam_metric = False  # MegaSaM ran with metric depth (e.g. MoGe-2): translations in metres

    # Atomic action segmentation: the fields of preprocess.segment.SegmentConfig.
    c.segment = ml_collections.ConfigDict(dataclasses.asdict(SegmentConfig()))

    c.caption = ml_collections.ConfigDict()
    c.caption.backend = "openai"  # openai | none
    c.caption.base_url = ml_collections.FieldReference(None, field_type=str)  # None: OPENAI_BASE_URL / api.openai.com
    c.caption.model = "gpt-4.1"
    c.caption.api_key_env = "OPENAI_API_KEY"
    c.caption.rate_limit_rpm = 300.0  # requests per minute, whole run
    c.caption.max_retries = 4
    c.caption.concurrency = 4  # simultaneous requests
    c.caption.cache_dir = ""  # '' -> {output}/cache/captions
    c.caption.usd_per_mtok_in = 2.0  # GPT-4.1 list price per million tokens (2025)
    c.caption.usd_per_mtok_out = 8.0

    c.writer = ml_collections.ConfigDict()
    c.writer.preview = ""  # '' | png | mp4
    return c


# Fields that only change how the work is spread, shown or reached (endpoints, local paths), not what comes out.
NON_RESULT_FIELDS = ("caption.concurrency", "caption.rate_limit_rpm", "caption.max_retries", "caption.base_url",
                     "caption.api_key_env", "caption.cache_dir", "hands.num_cpus", "hands.num_gpus", "hands.actors",
                     "hands.mano_dir", "writer.preview")


def result_settings(config: ml_collections.ConfigDict) -> dict:
    """The settings that determine the episodes (saved with a run, compared on reruns)."""
    d = config.to_dict()
    for dotted in NON_RESULT_FIELDS:
        group, field = dotted.split(".")
        d.get(group, {}).pop(field, None)
    return d
