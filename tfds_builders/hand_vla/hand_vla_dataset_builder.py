"""hand_vla: egocentric human-hand V-L-A episodes as RLDS (TFRecord or ArrayRecord).

    tfds build tfds_builders/hand_vla --config=demo --data_dir=DIR [--file_format=array_record]
    tfds build tfds_builders/hand_vla --config=vitra1m --manual_dir=RAW --data_dir=DIR
    tfds build tfds_builders/hand_vla --config=episodes --manual_dir=EPISODES --data_dir=DIR
    tfds build tfds_builders/hand_vla --config=teledata --manual_dir=TELEDATA --data_dir=DIR
    tfds build tfds_builders/hand_vla --manual_dir=RAW --data_dir=DIR \
        --config='{"name": "vitra1m_448", "source": "vitra1m", "short_side": 448}'
    tfds build tfds_builders/hand_vla --config=vitra1m --manual_dir=RAW --data_dir=DIR \
        --beam_pipeline_options="direct_num_workers=8,direct_running_mode=multi_processing"

Splits `train` and `val` are drawn per source video (see splits.py). Episodes that cannot be used
(missing/corrupt video, malformed files, NaNs, non-rotations, no tracked frame, length mismatch) are
skipped; each skip is logged with its reason and a count per reason is logged at the end (and kept in
`builder.skipped`). The build fails, and TFDS leaves no finished dataset behind, when a split ends up empty,
when more than `max_skip_fraction` of the inputs are skipped, on any error that is not an input error (a
bug), and when `undistort` meets a dataset folder without `intrinsics/` (unless `require_intrinsics` is off).
Without Beam options, HAND_VLA_WORKERS=N decodes episodes in N local processes (order, and so output, is
unchanged); with `--beam_pipeline_options` (any runner) the episodes are loaded by a Beam pipeline.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import multiprocessing
import os
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

# Absolute imports: Beam workers in other processes must be able to import what they unpickle.
from tfds_builders.hand_vla import demo, features, sources, splits, teledata
from vitra_jax.handspace.episode import EpisodeError


SOURCES = ("demo", "vitra1m", "episodes", "teledata")


@dataclasses.dataclass
class HandVlaConfig(tfds.core.BuilderConfig):
    """`source`: one of SOURCES; `short_side`: stored image short side (px); `val_fraction`: share of
    source videos whose episodes go to `val`; `clip_len`: frames per part where vitra1m videos are split
    into `{video}_part{k}.mp4`; `undistort`: vitra1m videos are raw, undistort them with `intrinsics/`;
    `require_intrinsics`: with `undistort`, a dataset folder needing but lacking `intrinsics/` fails the
    build (off: a warning, videos used as they are); `max_skip_fraction`: the build fails when a larger
    share of the inputs is skipped."""

    source: str = "episodes"
    short_side: int = 224
    val_fraction: float = 0.02
    clip_len: int = 2000
    undistort: bool = False
    num_demo_episodes: int = 8
    seed: int = 0
    require_intrinsics: bool = True
    max_skip_fraction: float = 0.05


class Builder(tfds.core.GeneratorBasedBuilder):
    """Human hand episodes with 102-d states/actions, world-space hands, cameras and captions."""

    VERSION = tfds.core.Version("1.3.0")
    RELEASE_NOTES = {"1.0.0": "First release: episodes, vitra1m and demo configs.",
                     "1.1.0": "Per-step caption rephrasings (language_rephrasings_left/right).",
                     "1.2.0": "train/val splits by source video; Beam build; on-the-fly Ego4D undistortion.",
                     "1.3.0": "Per-step caption intervals (language_interval_left/right), so samples limit the "
                              "secondary hand to its caption window exactly; `demo_large` config (32 episodes)."}
    BUILDER_CONFIGS = [
        HandVlaConfig(name="demo", source="demo", short_side=128, val_fraction=0.1,
                      description="8 procedural two-hand episodes (6 train, 2 val), 128 px (no inputs)."),
        HandVlaConfig(name="demo_large", source="demo", short_side=128, val_fraction=0.1, num_demo_episodes=32,
                      description="32 procedural two-hand episodes, 128 px (no inputs): the README demo."),
        HandVlaConfig(name="vitra1m", source="vitra1m",
                      description="Released VITRA-1M annotations + original videos, short side 224."),
        HandVlaConfig(name="episodes", source="episodes",
                      description="Episode files written by the labeling pipeline, short side 224."),
        HandVlaConfig(name="teledata", source="teledata",
                      description="VITRA-TeleData XHand robot episodes (.h5 + .mp4), short side 224."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "vitra1m: manual_dir holds {dataset}/episodic_annotations/*.npy and "
        "{dataset}/videos/{video_name}.mp4. "
        "episodes: manual_dir holds {stem}.npz + {stem}.json episode files (any depth). "
        "teledata: manual_dir holds VITRA-TeleData {id}.h5 + {id}.mp4 pairs (any depth)."
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.skipped: collections.Counter = collections.Counter()  # reason -> episodes skipped
        self._beam = False
        self._num_inputs = 0

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features.hand_vla_features(),
            supervised_keys=None,
            homepage="https://arxiv.org/abs/2510.21571",
        )

    def _download_and_prepare(self, dl_manager, download_config):
        self._beam = download_config.beam_runner is not None or download_config.beam_options is not None
        self.skipped.clear()
        super()._download_and_prepare(dl_manager, download_config)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        if cfg.source not in SOURCES:
            raise ValueError(f"unknown source {cfg.source!r} in config {cfg.name!r}; use one of {SOURCES}")
        if not 0 <= cfg.max_skip_fraction <= 1:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {cfg.max_skip_fraction} in config {cfg.name!r}")
        if cfg.source == "demo":
            items = [str(i) for i in range(cfg.num_demo_episodes)]
            groups = [splits.group_key("demo", demo.video_name(i)) for i in range(cfg.num_demo_episodes)]
        else:
            manual = Path(dl_manager.manual_dir)
            if cfg.source == "vitra1m":
                items = sources.list_vitra1m(manual)
                groups = [sources.vitra1m_group(i) for i in items]
                missing = sources.datasets_without_intrinsics(items) if cfg.undistort else []
                if missing and cfg.require_intrinsics:
                    raise sources.MissingIntrinsicsError(
                        f"undistort is on but {missing} have no intrinsics/ folder, so their raw videos cannot be "
                        "undistorted; add the release's intrinsics/, build them without undistort, or set "
                        "require_intrinsics false to use their videos as they are")
            elif cfg.source == "teledata":
                items = teledata.list_teledata(manual)
                groups = [teledata.teledata_group(i) for i in items]
            else:
                items = sources.list_episode_files(manual)
                groups = [self._group_or_skip(sources.episode_file_group, i) for i in items]
            if not items:
                raise FileNotFoundError(f"no {cfg.source} inputs under {manual}: {self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        self._num_inputs = len(items)
        if self.skipped:
            logging.warning("hand_vla: %d of %d inputs skipped before the train/val assignment: %s",
                            sum(self.skipped.values()), len(items), _summary(self.skipped))
        # episode_id = position in the sorted list of all inputs, unique across splits
        jobs = [(i, item, g) for i, (item, g) in enumerate(zip(items, groups)) if g is not None]
        if not jobs:
            raise RuntimeError(f"hand_vla: no usable episode among {len(items)} inputs "
                               f"(skipped: {_summary(self.skipped)})")
        spec = sources.LoadSpec(cfg.source, cfg.short_side, cfg.clip_len, cfg.undistort, cfg.seed,
                                cfg.require_intrinsics)
        assignment = splits.assign([g for _, _, g in jobs], cfg.val_fraction)
        return {name: self._generate_examples([jobs[r][:2] for r in rows], spec, name)
                for name, rows in assignment.items()}

    def _group_or_skip(self, group_of, item: str) -> str | None:
        """`group_of(item)`, or None for an input whose metadata already shows it unusable (counted)."""
        try:
            return group_of(item)
        except EpisodeError as e:
            _count_skip(self.skipped, item, e)
            return None

    def _generate_examples(self, jobs: list[tuple[int, str]], spec: sources.LoadSpec, split: str):
        load = functools.partial(sources.load, spec)
        if self._beam:
            import apache_beam as beam

            return beam.Create(jobs) | beam.Reshuffle() | beam.FlatMap(sources.load_counted, load)
        return self._local_examples(jobs, load, split)

    def _local_examples(self, jobs, load, split: str):
        workers = int(os.environ.get("HAND_VLA_WORKERS", "1"))
        skipped: collections.Counter = collections.Counter()
        written = 0
        pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
        try:
            results = pool.imap(load, jobs, chunksize=1) if pool else map(load, jobs)
            progress = tfds.core.utils.tqdm  # silenced by tfds.disable_progress_bar()
            for item, result in progress(results, total=len(jobs), desc=f"hand_vla {split} episodes"):
                if isinstance(result, EpisodeError):
                    _count_skip(skipped, item, result)
                    continue
                yield item, result
                written += 1
        finally:
            if pool:
                pool.terminate()
        self.skipped.update(skipped)
        summary = _summary(skipped)
        (logging.warning if skipped else logging.info)(
            "hand_vla %s: wrote %d of %d episodes; skipped: %s", split, written, len(jobs), summary)
        if written == 0:
            raise RuntimeError(f"hand_vla: no usable episode among {len(jobs)} {split} inputs (skipped: {summary})")
        self._check_skip_fraction()

    def _check_skip_fraction(self) -> None:
        """Fail when the inputs skipped so far exceed max_skip_fraction of all inputs (the share only grows,
        so checking after each split is exact by the last one)."""
        skipped, limit = sum(self.skipped.values()), self.builder_config.max_skip_fraction
        if self._num_inputs and skipped > limit * self._num_inputs:
            raise RuntimeError(
                f"hand_vla: {skipped} of {self._num_inputs} inputs skipped ({skipped / self._num_inputs:.1%}), "
                f"more than max_skip_fraction {limit:.1%} ({_summary(self.skipped)}); fix the inputs or raise "
                "max_skip_fraction in the config")

    def _process_pipeline_result(self, pipeline_result) -> None:
        from apache_beam.metrics.metric import MetricsFilter

        counters = pipeline_result.metrics().query(MetricsFilter().with_namespace(sources.METRICS_NAMESPACE))["counters"]
        written = 0
        for c in counters:
            value = c.committed if c.committed is not None else c.attempted
            if c.key.metric.name == "written":
                written += value
            else:
                self.skipped[c.key.metric.name.removeprefix("skipped_")] += value
        (logging.warning if self.skipped else logging.info)(
            "hand_vla (beam): wrote %d episodes; skipped: %s", written, _summary(self.skipped))
        self._check_skip_fraction()


def _count_skip(skipped: collections.Counter, item: str, error: EpisodeError) -> None:
    skipped[error.reason] += 1
    logging.warning("skipping %s: %s", item, error)


def _summary(skipped: collections.Counter) -> str:
    return ", ".join(f"{r}={n}" for r, n in sorted(skipped.items())) or "none"
