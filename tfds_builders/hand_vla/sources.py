"""Input readers of the builder configs: each lists work items and loads one into (Episode, frames).

- `episodes`: files written by `vitra_jax.handspace.episode.write_episode`, anywhere under manual_dir.
- `vitra1m`:  the released VITRA-1M layout under manual_dir:
      {dataset}/episodic_annotations/*.npy     pickled episode dicts (loaded without arbitrary pickles)
      {dataset}/videos/{video_name}.{mp4,webm,mkv,MP4}   the original (undistorted) videos, or
      {dataset}/videos/{video_name}_part{k}.mp4           the same split into parts of `clip_len` frames
  For a dataset folder named EgoExo4D*, frames and intrinsics are centre-cropped as the release does.
  (`{dataset}/episode_frame_index.npz` may sit beside them; it is not needed: every frame is a step.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitra_jax.handspace import episode as episode_lib
from vitra_jax.handspace import geometry

from . import video

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".MP4")
# EgoExo4D frames keep black fisheye borders after undistortion; the release keeps the centre 256/448 of
# each side of the undistorted (1408 px, square) frame and adjusts the intrinsics to match.
EGOEXO4D_CROP = 256 / 448


def list_episode_files(manual_dir: Path) -> list[str]:
    """Stems of every `{stem}.json` + `{stem}.npz` pair under manual_dir, sorted."""
    jsons = Path(manual_dir).rglob("*.json")
    return sorted(str(p.with_suffix("")) for p in jsons if p.with_suffix(".npz").exists())


def load_episode_file(stem: str, short_side: int) -> tuple[episode_lib.Episode, np.ndarray]:
    ep = episode_lib.read_episode(stem)
    episode_lib.validate(ep)
    return ep, video.read_frames(ep.video, ep.frame_index, short_side)


def list_vitra1m(manual_dir: Path) -> list[str]:
    """Every released annotation `{dataset}/episodic_annotations/*.npy` under manual_dir, sorted."""
    return sorted(str(p) for p in Path(manual_dir).glob("*/episodic_annotations/*.npy"))


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


def load_vitra1m(npy: str, short_side: int, clip_len: int = 2000) -> tuple[episode_lib.Episode, np.ndarray]:
    dataset_dir = Path(npy).parent.parent
    d = episode_lib.load_vitra_npy(npy)
    ep = episode_lib.from_vitra(d, video="", source=dataset_dir.name)
    ep.video = find_video(dataset_dir, ep.video_name)
    episode_lib.validate(ep)
    crop = EGOEXO4D_CROP if dataset_dir.name.startswith("EgoExo4D") else 1.0
    ep.intrinsics = geometry.center_crop_intrinsics(ep.intrinsics, crop)
    parts = [] if Path(ep.video).exists() else find_video_parts(dataset_dir, ep.video_name)
    if parts:
        return ep, video.read_frames_from_parts(parts, ep.frame_index, short_side, clip_len, crop)
    return ep, video.read_frames(ep.video, ep.frame_index, short_side, crop)
