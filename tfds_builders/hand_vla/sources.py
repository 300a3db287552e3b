"""Input readers of the builder configs: each lists work items and loads one into (Episode, frames).

- `episodes`: files written by `vitra_jax.handspace.episode.write_episode`, anywhere under manual_dir.
- `teledata`: the release's robot fine-tuning data, `{id}.h5` + `{id}.mp4` anywhere under manual_dir (teledata.py).
- `vitra1m`:  the released VITRA-1M layout under manual_dir:
      {dataset}/episodic_annotations/*.npy     pickled episode dicts (loaded without arbitrary pickles)
      {dataset}/videos/{video_name}.{mp4,webm,mkv,MP4}   the original (undistorted) videos, or
      {dataset}/videos/{video_name}_part{k}.mp4           the same split into parts of `clip_len` frames
      {dataset}/intrinsics/{video_name}.npy    Ego4D omnidirectional calibration, used with `undistort`
  For a dataset folder named EgoExo4D*, frames and intrinsics are centre-cropped as the release does.
  With `undistort`, videos of a dataset that has `intrinsics/` are the raw ones: each needed frame is
  undistorted on the fly exactly as the release's preprocessing does to whole videos. A dataset folder
  without `intrinsics/` then fails the build (`MissingIntrinsicsError`), unless its videos need none
  (EPIC-KITCHENS, SSv2: pinhole; EgoExo4D: must come undistorted) or `require_intrinsics` is off (a warning).
  (`{dataset}/episode_frame_index.npz` may sit beside them; it is not needed: every frame is a step.)

Each work item also has a group (its source video) that decides its split, so no video spans two splits.
Input errors (unreadable or malformed files, undecodable video) become `EpisodeError`s, counted as skips;
any other exception is a bug and fails the build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
from absl import logging

from tfds_builders.hand_vla import demo, examples, splits, teledata, video
from vitra_jax.handspace import episode as episode_lib
from vitra_jax.handspace import geometry, omnidir

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".MP4")
# EgoExo4D frames keep black fisheye borders after undistortion; the release keeps the centre 256/448 of
# each side of the undistorted (1408 px, square) frame and adjusts the intrinsics to match.
EGOEXO4D_CROP = 256 / 448
# Dataset folders (lower-case prefixes) whose videos are pinhole as released: no intrinsics/ needed.
PINHOLE_DATASETS = ("epic", "ssv2", "somethingsomething")
# What reading a malformed or unreadable input file raises (EpisodeError, a ValueError, passes through).
INPUT_ERRORS = (OSError, ValueError, EOFError, pickle.UnpicklingError)


class MissingIntrinsicsError(RuntimeError):
    """`undistort` is on but a dataset folder has no `intrinsics/`: its raw videos cannot be undistorted."""


@contextlib.contextmanager
def input_errors(what: str, reason: str = "unreadable_input"):
    """Turn the errors of reading a malformed input file into EpisodeError(reason), naming `what`."""
    try:
        yield
    except episode_lib.EpisodeError:
        raise
    except INPUT_ERRORS as e:
        raise episode_lib.EpisodeError(reason, f"{what}: {type(e).__name__}: {e}") from None


def is_egoexo4d(dataset_dir: Path) -> bool:
    return dataset_dir.name.startswith("EgoExo4D")


def needs_intrinsics(dataset_dir: Path) -> bool:
    """Whether raw videos of this dataset folder need `intrinsics/` to be undistorted."""
    name = dataset_dir.name.lower()
    return not is_egoexo4d(dataset_dir) and not name.startswith(PINHOLE_DATASETS)


def datasets_without_intrinsics(npys: list[str]) -> list[str]:
    """Dataset folders of these annotations that need `intrinsics/` for `undistort` but lack it."""
    dirs = sorted({Path(n).parent.parent for n in npys})
    return [str(d) for d in dirs if needs_intrinsics(d) and not (d / "intrinsics").is_dir()]


def list_episode_files(manual_dir: Path) -> list[str]:
    """Stems of every `{stem}.json` + `{stem}.npz` pair under manual_dir, sorted."""
    jsons = Path(manual_dir).rglob("*.json")
    return sorted(str(p.with_suffix("")) for p in jsons if p.with_suffix(".npz").exists())


def episode_file_group(stem: str) -> str:
    """The split key of an episode file; EpisodeError("unreadable_input") if its metadata does not parse."""
    try:
        meta = json.loads(Path(f"{stem}.json").read_text())
        return splits.group_key(meta.get("source", ""), meta["video_name"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise episode_lib.EpisodeError("unreadable_input", f"{stem}.json: {type(e).__name__}: {e}") from None


def load_episode_file(stem: str, short_side: int) -> tuple[episode_lib.Episode, np.ndarray]:
    ep = episode_lib.read_episode(stem)
    episode_lib.validate(ep)
    if not ep.text.get(ep.main_hand):  # its instruction would read "None." for the hand that moves
        raise episode_lib.EpisodeError(
            "no_instruction", f"{stem}: the main hand ({ep.main_hand}) has no caption (labelled with "
            "--captioner=none?); caption the episodes before building")
    return ep, video.read_frames(ep.video, ep.frame_index, short_side)


def list_vitra1m(manual_dir: Path) -> list[str]:
    """Every released annotation `{dataset}/episodic_annotations/*.npy` under manual_dir, sorted; manual_dir
    may also be one `{dataset}` folder (one build per sub-dataset, as the mixture weighs them)."""
    pattern = "episodic_annotations/*.npy" if (Path(manual_dir) / "episodic_annotations").is_dir() else \
        "*/episodic_annotations/*.npy"
    return sorted(str(p) for p in Path(manual_dir).glob(pattern))


def vitra1m_group(npy: str) -> str:
    """`{dataset}/{video}` from the release's file name `{dataset}_{video}_ep_{index}.npy`."""
    dataset = Path(npy).parent.parent.name
    stem = re.sub(r"_ep_[^_]*$", "", Path(npy).stem)
    return splits.group_key(dataset, stem.removeprefix(dataset + "_"))


def find_video(dataset_dir: Path, video_name: str) -> str:
    for suffix in VIDEO_SUFFIXES:
        path = dataset_dir / "videos" / f"{video_name}{suffix}"
        if path.exists():
            return str(path)
    return str(dataset_dir / "videos" / f"{video_name}{VIDEO_SUFFIXES[0]}")


def find_video_parts(dataset_dir: Path, video_name: str) -> list[str]:
    """`{video_name}_part1.mp4`, `_part2.mp4`, … in order, stopping at the first missing part."""
    parts = []
    while (path := dataset_dir / "videos" / f"{video_name}_part{len(parts) + 1}.mp4").exists():
        parts.append(str(path))
    return parts


def load_vitra1m(npy: str, short_side: int, clip_len: int = 2000, undistort: bool = False,
                 require_intrinsics: bool = True) -> tuple[episode_lib.Episode, np.ndarray]:
    dataset_dir = Path(npy).parent.parent
    with input_errors(npy):
        d = episode_lib.load_vitra_npy(npy)
    ep = episode_lib.from_vitra(d, video="", source=dataset_dir.name)
    ep.video = find_video(dataset_dir, ep.video_name)
    episode_lib.validate(ep)
    steps = []
    egoexo = is_egoexo4d(dataset_dir)  # Aria calibrations: videos must come undistorted
    if undistort and needs_intrinsics(dataset_dir):
        if (dataset_dir / "intrinsics").is_dir():
            path = dataset_dir / "intrinsics" / f"{ep.video_name}.npy"
            with input_errors(str(path), "bad_intrinsics"):
                undistort_frame = undistorter(str(path), path.stat().st_mtime_ns if path.exists() else None)
            if undistort_frame is not None:
                steps.append(undistort_frame)
        elif require_intrinsics:
            raise MissingIntrinsicsError(f"undistort is on but {dataset_dir} has no intrinsics/ folder")
        else:
            _warn_raw_videos(str(dataset_dir))
    if egoexo:
        ep.intrinsics = geometry.center_crop_intrinsics(ep.intrinsics, EGOEXO4D_CROP)
        steps.append(functools.partial(video.center_crop, fraction=EGOEXO4D_CROP))
    transform = _chain(steps) if steps else None
    parts = [] if Path(ep.video).exists() else find_video_parts(dataset_dir, ep.video_name)
    if parts:
        return ep, video.read_frames_from_parts(parts, ep.frame_index, short_side, clip_len, transform)
    return ep, video.read_frames(ep.video, ep.frame_index, short_side, transform)


@functools.cache
def _warn_raw_videos(dataset_dir: str) -> None:
    logging.warning("undistort is on but %s has no intrinsics/ folder: its videos are used AS THEY ARE "
                    "(require_intrinsics is off)", dataset_dir)


class Undistort:
    """Raw omnidirectional frame -> the undistorted pinhole frame (same size), as the release's
    `undistort_video.py` makes it: fixed-point maps, bicubic, black outside."""

    def __init__(self, cam: omnidir.OmnidirIntrinsics):
        self.cam = cam
        self._maps: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        if (w, h) not in self._maps:
            map_x, map_y = omnidir.undistort_maps(self.cam, w, h)
            self._maps[(w, h)] = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
        m1, m2 = self._maps[(w, h)]
        return cv2.remap(bgr, m1, m2, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)


@functools.lru_cache(maxsize=8)
def undistorter(intrinsics_path: str, mtime_ns: int | None) -> Undistort | None:
    """The frame undistortion of one video (None when its xi is 0), kept per process (keyed by path and
    modification time) for the next episodes of the same video: its maps take ~0.7 s at 1440×1080."""
    cam = omnidir.load_intrinsics(intrinsics_path)
    return Undistort(cam) if cam.needs_undistortion else None


def _chain(steps: list[video.Transform]) -> video.Transform:
    def apply(bgr: np.ndarray) -> np.ndarray:
        for step in steps:
            bgr = step(bgr)
        return bgr
    return apply


@dataclasses.dataclass(frozen=True)
class LoadSpec:
    """What a worker needs to turn one work item into an RLDS example (picklable, for processes and Beam)."""

    source: str
    short_side: int
    clip_len: int = 2000
    undistort: bool = False
    seed: int = 0
    require_intrinsics: bool = True


def load(spec: LoadSpec, job: tuple[int, str]) -> tuple[str, dict | episode_lib.EpisodeError]:
    """(item, RLDS example) or (item, EpisodeError) for job = (episode_id, item); other errors propagate."""
    episode_id, item = job
    try:
        if spec.source == "demo":
            ep, frames = demo.demo_episode(int(item), spec.seed)
        elif spec.source == "teledata":
            with input_errors(item):
                ep, frames = teledata.load_teledata(item, spec.short_side)
        elif spec.source == "vitra1m":
            ep, frames = load_vitra1m(item, spec.short_side, spec.clip_len, spec.undistort,
                                      spec.require_intrinsics)
        else:
            ep, frames = load_episode_file(item, spec.short_side)
        return item, examples.episode_example(ep, frames, item, episode_id)
    except episode_lib.EpisodeError as e:  # bad input: counted and skipped; anything else ends the build
        return item, e


METRICS_NAMESPACE = "hand_vla"


def load_counted(job: tuple[int, str], load):
    """Beam step: yields the loaded (key, example), or nothing for a skipped episode, counted by reason
    in Beam metrics (`written`, `skipped_{reason}`)."""
    from absl import logging
    from apache_beam.metrics import Metrics

    item, result = load(job)
    if isinstance(result, episode_lib.EpisodeError):
        Metrics.counter(METRICS_NAMESPACE, f"skipped_{result.reason}").inc()
        logging.warning("skipping %s: %s", item, result)
        return
    Metrics.counter(METRICS_NAMESPACE, "written").inc()
    yield item, result
