"""Stage backends chosen by the settings, built once per process; the frames they see.

- intrinsics: `fov_prior` or a reader of GeoCalib / MoGe-2 / DroidCalib / Ego4D calibration files;
- camera poses: identity for a static camera; for a moving one a MegaSaM / HaWoR-SLAM reader or
  `camera_frame` (no ego-motion estimate);
- hands: the MediaPipe CPU model, or per-video result files (VITRA release, stored CamHands, WiLoR, HaWoR)
  turned into hands once per video and process (a few videos kept) and sliced per clip;
- captions: an OpenAI-compatible captioner or none.
Hand backend modules are imported only where they run, so processes that run no hand model never import
torch; their errors derive from `errors.StageError`, which the graph catches without them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import ml_collections
import numpy as np

from preprocess import camera_pose, errors, intrinsics, records, writer
from preprocess.caption import captioner as captioner_lib
from preprocess.records import Clip, VideoInfo

def intrinsics_backend(cfg: ml_collections.ConfigDict, video_id: str):
    if cfg.backend == "fov_prior":
        return intrinsics.FovPrior(cfg.fov_x_deg)
    readers = {"droidcalib": intrinsics.DroidCalibReader, "geocalib": intrinsics.GeoCalibReader,
               "moge": intrinsics.MoGeReader, "ego4d_omnidir": intrinsics.Ego4DOmnidirReader}
    if cfg.backend not in readers:
        raise errors.ConfigError(f"intrinsics.backend must be fov_prior or one of {sorted(readers)}, "
                                 f"got {cfg.backend!r}")
    if not cfg.path:
        raise errors.ConfigError(f"intrinsics.backend {cfg.backend} reads files: set intrinsics.path "
                                 "('{video_id}' is replaced by each video's id)")
    return readers[cfg.backend](cfg.path.format(video_id=video_id))


def pose_backend_for(cfg: ml_collections.ConfigDict, motion: str, video_id: str):
    """Identity poses for a static camera; for a moving one `moving_backend`: a reader of MegaSaM or HaWoR
    SLAM results, or `camera_frame` (no ego-motion estimate: world = the camera at every frame, recorded
    as such in the episode's labeler versions)."""
    name = cfg.backend
    if name == "auto":
        name = "static" if motion == "static" else cfg.moving_backend
    if name == "static":
        return camera_pose.StaticPose()
    if name == "camera_frame":
        return camera_pose.StaticPose("camera_frame")
    readers = {"megasam": functools.partial(camera_pose.MegaSaMReader, metric=cfg.megasam_metric),
               "hawor_slam": camera_pose.HaworSlamReader}
    if name not in readers:
        raise errors.ConfigError(f"camera_pose backend must be auto, static, camera_frame or one of "
                                 f"{sorted(readers)}, got {name!r}")
    if not cfg.path:
        raise errors.ConfigError(f"camera_pose backend {name} reads files: set camera_pose.path ('{{video_id}}' "
                                 "is replaced by each video's id)")
    return readers[name](cfg.path.format(video_id=video_id))


def hand_backend(cfg: ml_collections.ConfigDict):
    """The camera-space hand model named by `hands.backend` (with `hands.options` as keyword arguments)."""
    options = cfg.options.to_dict()
    import torch

    # Bitwise-equal fits on every machine and runner: a fixed thread count fixes torch's reduction order.
    torch.set_num_threads(int(cfg.torch_threads))
    if cfg.backend == "mediapipe":
        from preprocess.hands import mediapipe_backend
        if "fit" in options:  # MANO fit settings by name, e.g. {'iterations': 100}
            options["fit"] = dataclasses.replace(mediapipe_backend.MEDIAPIPE_FIT, **options["fit"])
        return mediapipe_backend.MediaPipeBackend(cfg.mano_dir, **options)
    raise errors.ConfigError(f"hands.backend must be one of {HAND_BACKENDS}; got {cfg.backend!r}")


HAND_BACKENDS = ("mediapipe", "precomputed", "wilor", "hawor")
MANO_BACKENDS = ("mediapipe", "wilor", "hawor")  # these fit or pose a MANO model


def check_settings(config: ml_collections.ConfigDict) -> str | None:
    """What the settings get wrong that would otherwise stop a run midway (hours in, for captions), found
    before any work: the hand backend, its files and MANO model, the captioner (API key, URL). Returns the
    MANO file's path where the hand backend uses one."""
    hands = config.hands
    if hands.backend not in HAND_BACKENDS:
        raise errors.ConfigError(f"hands.backend must be one of {HAND_BACKENDS}; got {hands.backend!r}")
    if hands.backend != "mediapipe" and not hands.path:
        raise errors.ConfigError(f"hands.backend {hands.backend} reads files: set hands.path ('{{video_id}}' is "
                                 "replaced by each video's id)")
    make_captioner(ml_collections.ConfigDict({**config.caption.to_dict(), "cache_dir": ""}))
    if hands.backend in MANO_BACKENDS:
        from preprocess.hands.mano_files import mano_file

        return str(mano_file(hands.mano_dir))
    return None


_VIDEO_HANDS: dict[tuple, records.CamHands] = {}  # a few videos' hands from result files, per process


def file_hands(cfg: ml_collections.ConfigDict, clip: Clip, info: VideoInfo, k: records.Intrinsics,
               frames: np.ndarray) -> records.CamHands:
    """The clip's frames of a result file of its video (`hands.path`) in the camera `k` of the frames.

    WiLoR and HaWoR results are read for the whole video (their hand shape is the mean over all kept frames),
    so each video's file is turned into hands once per process and sliced per clip."""
    from preprocess.hands.precomputed import slice_frames

    path = cfg.path.format(video_id=clip.video_id)
    stop = clip.start + len(frames)
    length = None
    if cfg.backend == "hawor":  # HaWoR's frame count: its last chunk, or the clip's end past it
        from preprocess.hands.hawor import cam_space_length
        length = max(stop, cam_space_length(path))
    key = (json.dumps(cfg.to_dict(), sort_keys=True), clip.video_id, info.width, info.height,
           np.asarray(k.k, np.float64).tobytes(), k.width, k.height, length)
    if key not in _VIDEO_HANDS:
        cam = _video_file_hands(cfg, path, info, k, length)
        if len(_VIDEO_HANDS) >= 4:
            _VIDEO_HANDS.pop(next(iter(_VIDEO_HANDS)))
        _VIDEO_HANDS[key] = cam
    return slice_frames(_VIDEO_HANDS[key], clip.start, stop)


def _video_file_hands(cfg: ml_collections.ConfigDict, path: str, info: VideoInfo, k: records.Intrinsics,
                      length: int | None) -> records.CamHands:
    if cfg.backend == "precomputed":
        from preprocess.hands.precomputed import read_hands
        return read_hands(path)
    if cfg.backend == "wilor":
        from preprocess.hands.wilor import WilorBackend
        return WilorBackend(path, cfg.mano_dir).video_hands(k)
    from preprocess.hands.hawor import HaworBackend  # HaWoR ran on the video at its own size
    return HaworBackend(path, cfg.mano_dir, video_size=(info.width, info.height)).video_hands(k, length)


def clip_hands(cfg: ml_collections.ConfigDict, clip: Clip, info: VideoInfo, intr: records.Intrinsics,
               frames: np.ndarray) -> records.CamHands:
    """Camera-space hands of a clip's pinhole frames (`cfg` = the `hands` settings): the hand model of this
    process, or the clip's frames of a result file."""
    k = frame_intrinsics(intr, frames)
    if cfg.backend == "mediapipe":
        return hand_model(cfg).estimate(frames, k, fps=info.fps)  # the outlier test judges speeds
    return file_hands(cfg, clip, info, k, frames)


@functools.cache
def _cached(kind: str, settings: str):
    cfg = ml_collections.ConfigDict(json.loads(settings))
    if kind == "hands":
        return hand_backend(cfg)
    if kind == "caption":
        return make_captioner(cfg)
    raise KeyError(kind)


def hand_model(cfg: ml_collections.ConfigDict):
    """This process's hand model for the `hands` settings, built on first use."""
    return _cached("hands", json.dumps(cfg.to_dict(), sort_keys=True))


def captioner(cfg: ml_collections.ConfigDict, output: str):
    """This process's captioner for the `caption` settings of a run into `output`, built on first use."""
    d = cfg.to_dict()
    d["cache_dir"] = caption_cache_dir(cfg, output)
    return _cached("caption", json.dumps(d, sort_keys=True))


def caption_cache_dir(cfg: ml_collections.ConfigDict, output: str) -> str:
    """`caption.cache_dir`, else `{output}/cache/captions` for a local output ('' = no cache for remote ones)."""
    if cfg.cache_dir:
        return cfg.cache_dir
    return os.path.join(output, "cache", "captions") if writer.is_local(output) else ""


def make_captioner(cfg: ml_collections.ConfigDict):
    if cfg.backend == "none":
        return captioner_lib.NoCaptioner()
    if cfg.backend != "openai":
        raise errors.ConfigError(f"caption.backend must be openai or none, got {cfg.backend!r}")
    return captioner_lib.OpenAICaptioner(
        base_url=cfg.base_url, model=cfg.model, api_key_env=cfg.api_key_env, rate_limit_rpm=cfg.rate_limit_rpm,
        max_retries=cfg.max_retries, cache_dir=cfg.cache_dir or None,
        price_in_per_m=cfg.usd_per_mtok_in, price_out_per_m=cfg.usd_per_mtok_out)


# --- per clip -----------------------------------------------------------------------------------------------

# --- frames -------------------------------------------------------------------------------------------------

def pinhole(frames: np.ndarray, intr: records.Intrinsics) -> np.ndarray:
    """Frames as the pinhole camera of `intr` sees them (undistorted when the raw frames are distorted)."""
    if intr.distortion.get("model", "none") != "none":
        frames = intrinsics.undistort(frames, intr)
    return frames


def frame_intrinsics(intr: records.Intrinsics, frames: np.ndarray) -> records.Intrinsics:
    """The pinhole intrinsics of (undistorted) frames at their own size; `intr` is at the video's size."""
    height, width = frames.shape[1:3]
    k = np.asarray(intr.k, np.float64) * np.array([[width / intr.width], [height / intr.height], [1.0]])
    return records.Intrinsics(k=k, width=width, height=height, source=intr.source)

