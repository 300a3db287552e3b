"""Input readers of the builder configs: each lists work items and loads one into (Episode, frames).

- `episodes`: files written by `vitra_jax.handspace.episode.write_episode`, anywhere under manual_dir.
- `vitra1m`:  the released VITRA-1M layout under manual_dir:
      {dataset}/episodic_annotations/*.npy     pickled episode dicts (loaded without arbitrary pickles)
      {dataset}/videos/{video_name}.{mp4,webm,mkv,MP4}   the original (undistorted) videos
  (`{dataset}/episode_frame_index.npz` may sit beside them; it is not needed: every frame is a step.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitra_jax.handspace import episode as episode_lib

from . import video

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".MP4")


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


def load_vitra1m(npy: str, short_side: int) -> tuple[episode_lib.Episode, np.ndarray]:
    dataset_dir = Path(npy).parent.parent
    d = episode_lib.load_vitra_npy(npy)
    ep = episode_lib.from_vitra(d, video="", source=dataset_dir.name)
    ep.video = find_video(dataset_dir, ep.video_name)
    episode_lib.validate(ep)
    return ep, video.read_frames(ep.video, ep.frame_index, short_side)
