"""The labeling stage graph, one function per unit of work; both runners call exactly these.

Per video `plan_video`: probe → plan_clips (VITRA §III: 20 s clips with overlap).
Per clip `run_clip`: read frames → intrinsics (+ undistortion) → camera-space hands → static/moving camera
(background flow with the hands masked) → camera poses.
Per video `run_video`: stitch the clips → world-space hands → atomic segments per hand.
Per segment `run_caption`: trajectory overlay on 8 frames → instruction (or N/A).
Per video `write_video`: one episode per captioned segment.

Every unit reads its inputs from and saves its result to the run store (`preprocess.store`) under a fixed
key, skips work whose result is already finished, and records an expected failure (bad video, no hands, a
backend or API error) as a failure of that key with its reason instead of raising, so a run continues past
it and a rerun retries it. Results depend only on the inputs and settings, never on the runner or the
number of workers, so reruns and runners produce the same episodes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import cv2
import ml_collections
import numpy as np

import vitra_jax
from preprocess import backends, camera_motion, camera_pose, records, store, video, writer
from preprocess.caption import captioner as captioner_lib
from preprocess.caption import overlay
from preprocess.errors import ConfigError, StageError
from preprocess.records import HANDS, Clip, VideoInfo
from vitra_jax.handspace import episode as episode_lib
from vitra_jax.handspace import geometry

CLIP_STAGES = ("intrinsics", "hands", "camera_motion", "camera_poses")


class NoHandsError(StageError):
    """A video in which no clip tracked a hand."""

    def __init__(self, detail: str):
        super().__init__("no_hands", detail)


# Errors of bad input or of a backend/API that fail one unit of work (counted by their `reason`); anything
# else is a bug and stops the run. Caption and episode errors (caption/, vitra_jax) carry a `reason` too.
STAGE_ERRORS: tuple[type[Exception], ...] = (StageError, captioner_lib.CaptionError, episode_lib.EpisodeError)


@dataclasses.dataclass
class Run:
    """What a worker needs: the settings and the run folder (picklable)."""

    config: ml_collections.ConfigDict
    output: str

    @functools.cached_property
    def store(self) -> store.Store:
        return store.Store(self.output)

    def __getstate__(self):
        return {"config": self.config, "output": self.output}

    def __setstate__(self, state):
        self.config, self.output = state["config"], state["output"]


# --- keys -------------------------------------------------------------------------------------------------

def plan_key(video_id: str) -> str:
    return f"work/{video_id}/plan"


def clip_key(clip: Clip, stage: str) -> str:
    return f"work/{clip.video_id}/clip{clip.index:04d}/{stage}"


def video_key(video_id: str) -> str:
    return f"work/{video_id}/tracks"


def caption_key(video_id: str, segment: records.Segment) -> str:
    return f"work/{video_id}/captions/{segment.hand}_{segment.start:06d}_{segment.stop:06d}"


def written_key(video_id: str) -> str:
    return f"work/{video_id}/episodes"


def _guarded(run: Run, key: str, fn) -> bool:
    """Run fn() unless `key` is finished; an expected failure is recorded under `key`. True when done."""
    if run.store.done(key):
        return True
    try:
        fn()
    except STAGE_ERRORS as e:
        run.store.fail(key, e.reason, str(e))
        return False
    return True


# --- inputs -----------------------------------------------------------------------------------------------

def list_videos(input_dir: str, suffixes: Sequence[str]) -> list[str]:
    """Video files directly in `input_dir` (or the file itself), sorted; ids (file stems) must be unique."""
    if os.path.isfile(input_dir):
        paths = [input_dir]
    elif os.path.isdir(input_dir):
        paths = sorted(os.path.join(input_dir, n) for n in os.listdir(input_dir) if n.endswith(tuple(suffixes)))
    else:
        raise ConfigError(f"--input {input_dir}: no such file or folder")
    ids: dict[str, str] = {}
    for p in paths:
        vid = os.path.splitext(os.path.basename(p))[0]
        if vid in ids:
            raise ConfigError(f"two videos share the id {vid!r}: {ids[vid]} and {p}; rename one")
        ids[vid] = p
    return [os.path.abspath(p) for p in paths]


def video_id_of(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


class VideoChanged(ConfigError):
    """A video whose file differs from the one the run folder's results were computed from."""


def _file_stamp(path: str) -> dict:
    st = os.stat(path)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def plan_video(run: Run, path: str) -> list[Clip]:
    """The clips of one video (probed once, then read from the store); [] when the video failed.

    Raises VideoChanged when the file is not the one the stored results came from (size or time differ)."""
    key = plan_key(video_id_of(path))

    def plan():
        cfg = run.config.video
        info = video.probe(path)
        if cfg.max_frames is not None:
            info.num_frames = min(info.num_frames, int(cfg.max_frames))
        clips = video.plan_clips(info, cfg.clip_seconds, cfg.overlap_seconds)
        run.store.save(key, {"info": info, "clips": clips, "file": _file_stamp(path)})

    if not _guarded(run, key, plan):
        return []
    stored = run.store.load(key)
    if stored["file"] != _file_stamp(path):
        raise VideoChanged(f"{path} changed since its results in {run.output} were computed ({stored['file']} "
                           f"-> {_file_stamp(path)}); use a new --output, or delete {run.output}/work/"
                           f"{video_id_of(path)} and its episodes to label it again")
    return stored["clips"]


def video_info(run: Run, video_id: str) -> VideoInfo:
    return run.store.load(plan_key(video_id))["info"]


# --- per clip -----------------------------------------------------------------------------------------------

def hand_boxes(cam: records.CamHands, k: np.ndarray) -> list[np.ndarray]:
    """Per frame, (K, 4) x0, y0, x1, y1 pixel boxes of the tracked hands' projected joints."""
    n = len(next(iter(cam.hands.values())).kept)
    boxes = []
    for t in range(n):
        rows = []
        for h in cam.hands.values():
            if h.kept[t] and np.all(h.joints[t, :, 2] > 1e-3):
                uv = geometry.project(h.joints[t], k)
                rows.append([*uv.min(0), *uv.max(0)])
        boxes.append(np.asarray(rows, np.float64).reshape(-1, 4))
    return boxes


def run_clip(run: Run, clip: Clip, stages: Sequence[str] = CLIP_STAGES) -> bool:
    """The per-clip stages (in CLIP_STAGES order); True when all of `stages` are finished for the clip."""
    s = run.store
    info = video_info(run, clip.video_id)
    cache: dict = {}  # each clip is decoded and its intrinsics loaded once per call

    def raw():
        if "raw" not in cache:
            cache["raw"] = video.read_frames(info.path, clip.start, clip.stop, max_width=run.config.video.max_width)
        return cache["raw"]

    def intr() -> records.Intrinsics:
        if "intrinsics" not in cache:
            cache["intrinsics"] = s.load(clip_key(clip, "intrinsics"))
        return cache["intrinsics"]

    def frames():
        if "pinhole" not in cache:
            cache["pinhole"] = backends.pinhole(raw(), intr())
        return cache["pinhole"]

    def do_intrinsics():
        estimator = backends.intrinsics_backend(run.config.intrinsics, clip.video_id)
        # The prior and the file readers look at no frames.
        s.save(clip_key(clip, "intrinsics"), estimator.estimate(info))

    def do_hands():
        s.save(clip_key(clip, "hands"), backends.clip_hands(run.config.hands, clip, info, intr(), frames()))

    def do_motion():
        cam = s.load(clip_key(clip, "hands"))
        k = backends.frame_intrinsics(intr(), frames()).k
        cfg = camera_motion.CameraMotionConfig(**run.config.camera_motion.to_dict())
        s.save(clip_key(clip, "camera_motion"), camera_motion.classify(frames(), hand_boxes(cam, k), config=cfg))

    def do_poses():
        motion = s.load(clip_key(clip, "camera_motion"))
        pose_backend = backends.pose_backend_for(run.config.camera_pose, motion.label, clip.video_id)
        poses = pose_backend.estimate(clip, frames(), backends.frame_intrinsics(intr(), frames()))
        s.save(clip_key(clip, "camera_poses"), poses)

    steps = {"intrinsics": do_intrinsics, "hands": do_hands, "camera_motion": do_motion,
             "camera_poses": do_poses}
    for stage in CLIP_STAGES:
        if stage not in stages:
            continue
        if not _guarded(run, clip_key(clip, stage), steps[stage]):
            return False
    return True


# --- per video ----------------------------------------------------------------------------------------------

def stitch_hands(clips: list[Clip], per_clip: list[records.CamHands]) -> records.CamHands:
    hands = {}
    for h in HANDS:
        parts = [c.hands[h] for c in per_clip]
        fields = {f: video.stitch(clips, [getattr(p, f) for p in parts])
                  for f in ("kept", "wrist", "orient", "hand_pose", "joints", "score")}
        # One shape per hand: the clip that tracked it longest (ties: the earliest) gives beta.
        best = int(np.argmax([p.kept.sum() for p in parts]))
        hands[h] = records.CamHand(beta=parts[best].beta, **fields)
    return records.CamHands(hands=hands, backend=per_clip[0].backend, version=per_clip[0].version)


def run_video(run: Run, video_id: str) -> bool:
    """Stitch clips, world-space hands and segments of one video (all clips must be finished)."""
    from preprocess import segment

    s = run.store
    plan = s.load(plan_key(video_id))
    clips, info = plan["clips"], plan["info"]
    key = video_key(video_id)
    if s.done(key):
        return True
    for clip in clips:
        for stage in CLIP_STAGES:
            failure = s.failure(clip_key(clip, stage))
            if failure is not None or not s.done(clip_key(clip, stage)):
                reason = failure["reason"] if failure else "incomplete"
                s.fail(key, reason, f"{clip.name} {stage}: {failure['detail'] if failure else 'not run'}")
                return False

    def work():
        load = lambda stage: [s.load(clip_key(c, stage)) for c in clips]  # noqa: E731
        cam = stitch_hands(clips, load("hands"))
        if not any(h.kept.any() for h in cam.hands.values()):
            raise NoHandsError(f"{video_id}: no hand tracked in any of {info.num_frames} frames")
        motions = load("camera_motion")
        poses = camera_pose.stitch_poses(clips, load("camera_poses"))
        tracks = camera_pose.world_hands(cam, poses)
        seg_cfg = segment.SegmentConfig(**run.config.segment.to_dict())
        segments, dropped = [], []
        for h in HANDS:
            kept, lost = segment.segment(tracks[h], info.fps, h, config=seg_cfg)
            segments += kept
            dropped += lost
        intr = s.load(clip_key(clips[0], "intrinsics"))  # one camera per video: the first clip's
        label = "moving" if any(m.label == "moving" for m in motions) else "static"
        here = vitra_jax.__version__  # stages computed by this package: its version
        versions = {"video": f"opencv@{cv2.__version__}", "intrinsics": f"{intr.source}@{here}",
                    "hands": f"{cam.backend}@{cam.version}", "camera_motion": f"farneback@{here}",
                    "camera_pose": f"{poses.source}@{here}", "segment": f"speed_minima@{here}"}
        s.save(key, {"tracks": tracks, "extrinsics": poses.extrinsics, "intrinsics": intr, "camera_motion": label,
                     "segments": segments, "dropped": dropped, "versions": versions})

    return _guarded(run, key, work)


def segments_of(run: Run, video_id: str) -> list[records.Segment]:
    key = video_key(video_id)
    return run.store.load(key)["segments"] if run.store.done(key) else []


# --- per segment --------------------------------------------------------------------------------------------

def run_caption(run: Run, video_id: str, seg: records.Segment, captioner=None) -> bool:
    """Caption one segment (skipped when captioning is off)."""
    if run.config.caption.backend == "none":
        return True
    key = caption_key(video_id, seg)

    def work():
        s = run.store
        info = video_info(run, video_id)
        v = s.load(video_key(video_id))
        raw = video.read_frames(info.path, seg.start, seg.stop, max_width=run.config.video.max_width)
        frames = backends.pinhole(raw, v["intrinsics"])
        local = records.Segment(seg.hand, 0, seg.stop - seg.start)
        track = writer.slice_track(v["tracks"][seg.hand], seg.start, seg.stop)
        k = backends.frame_intrinsics(v["intrinsics"], frames).k
        shown = overlay.overlay_frames(frames, local, track, v["extrinsics"][seg.start:seg.stop], k)
        shown = [(t + seg.start, img) for t, img in shown]
        cap = (captioner or backends.captioner(run.config.caption, run.output)).caption(shown, seg.hand, seg)
        s.save(key, cap)

    return _guarded(run, key, work)


# --- per video: episodes ------------------------------------------------------------------------------------

def write_video(run: Run, video_id: str) -> bool:
    """Write the episodes of one video once its segments are captioned; records what was written/dropped."""
    s = run.store
    key = written_key(video_id)
    if s.done(key) or not s.done(video_key(video_id)):
        return s.done(key)
    v = s.load(video_key(video_id))
    captioning = run.config.caption.backend != "none"
    captions: dict[str, list[records.Caption]] = {h: [] for h in HANDS}
    for seg in v["segments"]:
        if captioning:
            if not s.done(caption_key(video_id, seg)):
                return False  # a caption failed or is missing: nothing is written until a rerun gets it
            captions[seg.hand].append(s.load(caption_key(video_id, seg)))
    for caps in captions.values():
        caps.sort(key=lambda c: c.start)
    by_start = {(c.hand, c.start): c for caps in captions.values() for c in caps}

    def work():
        info = video_info(run, video_id)
        versions = dict(v["versions"])
        if captioning:
            versions["caption"] = f"{run.config.caption.model}@{captioner_lib.PROMPT_VERSION}"
        written, dropped = [], []
        source_video = None
        if v["intrinsics"].distortion.get("model", "none") != "none" and v["segments"]:
            source_video = writer.undistorted_video(run.output, info, v["intrinsics"])
        for seg in v["segments"]:
            cap = by_start.get((seg.hand, seg.start))
            if captioning and (cap is None or not cap.text):
                dropped.append(records.Dropped(seg.hand, seg.start, seg.stop, "caption_na"))
                continue
            stem = writer.episode_path(run.output, video_id, seg.hand, seg.start)
            ep = writer.build_episode(info=info, segment=seg, tracks=v["tracks"], extrinsics=v["extrinsics"],
                                      intrinsics=v["intrinsics"], camera_motion=v["camera_motion"],
                                      captions=captions, labeler_versions=versions, source=run.config.dataset,
                                      video=source_video)
            if not writer.exists(stem):
                writer.write(stem, ep)
            if run.config.writer.preview:
                writer.write_preview(run.output, stem, ep, run.config.writer.preview)
            written.append(stem.name)
        s.save(key, {"written": written, "dropped": dropped})

    return _guarded(run, key, work)
