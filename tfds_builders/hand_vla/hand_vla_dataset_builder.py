"""hand_vla: egocentric human-hand V-L-A episodes as RLDS (TFRecord or ArrayRecord).

    tfds build tfds_builders/hand_vla --config=demo --data_dir=DIR [--file_format=array_record]
    tfds build tfds_builders/hand_vla --config=vitra1m --manual_dir=RAW --data_dir=DIR
    tfds build tfds_builders/hand_vla --config=episodes --manual_dir=EPISODES --data_dir=DIR
    tfds build tfds_builders/hand_vla --manual_dir=RAW --data_dir=DIR \
        --config='{"name": "vitra1m_448", "source": "vitra1m", "short_side": 448}'

Episodes that cannot be used (missing/corrupt video, NaNs, no tracked frame, length mismatch) are skipped;
each skip is logged with its reason and a count per reason is logged at the end (and kept in
`builder.skipped`). If no episode survives, the build fails and TFDS leaves no finished dataset behind.
Set HAND_VLA_WORKERS=N to decode episodes in N processes (order, and so output, is unchanged).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import multiprocessing
import os
from pathlib import Path
from typing import Callable

import tensorflow_datasets as tfds
from absl import logging
from tqdm import tqdm

from vitra_jax.handspace.episode import EpisodeError

from . import demo, examples, features, sources


SOURCES = ("demo", "vitra1m", "episodes")


@dataclasses.dataclass
class HandVlaConfig(tfds.core.BuilderConfig):
    """`source`: one of SOURCES; `short_side`: stored image short side (px); `num_demo_episodes`;
    `clip_len`: frames per part where vitra1m videos are split into `{video}_part{k}.mp4`."""

    source: str = "episodes"
    short_side: int = 224
    clip_len: int = 2000
    num_demo_episodes: int = 8
    seed: int = 0


def _load(kind: str, short_side: int, seed: int, clip_len: int, job: tuple[int, str]) -> tuple[str, dict | EpisodeError]:
    """(item, RLDS example) or (item, EpisodeError) for job = (episode_id, item); runs in worker processes."""
    episode_id, item = job
    try:
        if kind == "demo":
            ep, frames = demo.demo_episode(int(item), seed)
        elif kind == "vitra1m":
            ep, frames = sources.load_vitra1m(item, short_side, clip_len)
        else:
            ep, frames = sources.load_episode_file(item, short_side)
        return item, examples.episode_example(ep, frames, item, episode_id)
    except EpisodeError as e:
        return item, e
    except Exception as e:  # a decoder or file error must not end the build: count it instead
        return item, EpisodeError("unreadable_input", f"{type(e).__name__}: {e}")


class Builder(tfds.core.GeneratorBasedBuilder):
    """Human hand episodes with 102-d states/actions, world-space hands, cameras and captions."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release: episodes, vitra1m and demo configs.",
                     "1.1.0": "Per-step caption rephrasings (language_rephrasings_left/right)."}
    BUILDER_CONFIGS = [
        HandVlaConfig(name="demo", source="demo", short_side=128,
                      description="8 procedural two-hand episodes, 128 px (no inputs)."),
        HandVlaConfig(name="vitra1m", source="vitra1m",
                      description="Released VITRA-1M annotations + original videos, short side 224."),
        HandVlaConfig(name="episodes", source="episodes",
                      description="Episode files written by the labeling pipeline, short side 224."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "vitra1m: manual_dir holds {dataset}/episodic_annotations/*.npy and "
        "{dataset}/videos/{video_name}.mp4. "
        "episodes: manual_dir holds {stem}.npz + {stem}.json episode files (any depth)."
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: collections.Counter = collections.Counter()  # reason -> episodes skipped

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.hand_vla_features(),
            supervised_keys=None,
            homepage="https://arxiv.org/abs/2510.21571",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        name = self.builder_config.source
        if name not in SOURCES:
            config = self.builder_config.name
            raise ValueError(f"unknown source {name!r} in config {config!r}; use one of {SOURCES}")
        if name == "demo":
            items = [str(i) for i in range(self.builder_config.num_demo_episodes)]
        else:
            manual = Path(dl_manager.manual_dir)
            items = sources.list_vitra1m(manual) if name == "vitra1m" else sources.list_episode_files(manual)
            if not items:
                hint = self.MANUAL_DOWNLOAD_INSTRUCTIONS
                raise FileNotFoundError(f"no {name} inputs under {manual}: {hint}")
        return {"train": self._generate_examples(items)}

    def _generate_examples(self, items: list[str]):
        cfg = self.builder_config
        load: Callable = functools.partial(_load, cfg.source, cfg.short_side, cfg.seed, cfg.clip_len)
        workers = int(os.environ.get("HAND_VLA_WORKERS", "1"))
        self.skipped.clear()
        written = 0
        pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            jobs = list(enumerate(items))
            results = pool.imap(load, jobs, chunksize=1) if pool else map(load, jobs)
            for item, result in tqdm(results, total=len(items), desc="hand_vla episodes"):
                if isinstance(result, EpisodeError):
                    self.skipped[result.reason] += 1
                    logging.warning("skipping %s: %s", item, result)
                    continue
                yield item, result
                written += 1
        finally:
            if pool:
                pool.terminate()
        summary = ", ".join(f"{r}={n}" for r, n in sorted(self.skipped.items())) or "none"
        log = logging.warning if self.skipped else logging.info
        log("hand_vla: wrote %d of %d episodes; skipped: %s", written, len(items), summary)
        if written == 0:
            raise RuntimeError(f"hand_vla: no usable episode among {len(items)} inputs (skipped: {summary})")
