"""Throughput of the hand_vla `vitra1m` build (TFDS generation: decode, targets, JPEG, write) on this CPU.

    python -m vitra_jax.benchmarks.build --repeats=40 [--workers=2] [--beam] [--file_format=array_record]

The official example episode (25 frames of a 480x368 clip) is laid out `--repeats` times as a VITRA-1M
manual_dir (symlinks), built into a temporary data_dir, and timed end to end after a 2-episode warm-up
build; prints one table. `--beam` builds through Beam's DirectRunner with `--workers` processes
(`direct_running_mode=multi_processing`) instead of the local process pool.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags  # noqa: E402

_REPO = pathlib.Path(__file__).resolve().parents[2]
_FIXTURE = _REPO.parent / "shared" / "fixtures" / "videos"
_STEM = "Ego4D_03cc49c3-a7d1-445b-9a2a-545c4fae6843_ep_example"
_VIDEO = "03cc49c3-a7d1-445b-9a2a-545c4fae6843.mp4"

_REPEATS = flags.DEFINE_integer("repeats", 40, "Copies of the example episode to build.")
_WORKERS = flags.DEFINE_integer("workers", 1, "Decoding processes (HAND_VLA_WORKERS, or Beam workers).")
_BEAM = flags.DEFINE_bool("beam", False, "Build through a Beam DirectRunner pipeline.")
_FORMAT = flags.DEFINE_enum("file_format", "tfrecord", ["tfrecord", "array_record"], "Output file format.")
_FIXTURES = flags.DEFINE_string("fixtures", str(_FIXTURE), "Folder holding the example episode and clip.")


def layout_manual_dir(root: pathlib.Path, fixtures: pathlib.Path, repeats: int) -> pathlib.Path:
    """A VITRA-1M style manual_dir with `repeats` symlinked copies of the example episode."""
    ann = root / "Ego4D" / "episodic_annotations"
    ann.mkdir(parents=True)
    (root / "Ego4D" / "videos").mkdir()
    (root / "Ego4D" / "videos" / _VIDEO).symlink_to(fixtures / _VIDEO)
    for i in range(repeats):
        (ann / f"{_STEM}_{i:06d}.npy").symlink_to(fixtures / f"{_STEM}.npy")
    return root


def run_build(repeats: int, workers: int, file_format: str, fixtures: pathlib.Path,
              beam: bool = False) -> dict[str, float]:
    """Build `repeats` episodes; returns episodes, frames, seconds and rates."""
    import tensorflow_datasets as tfds

    from tfds_builders.hand_vla import hand_vla_dataset_builder as hv
    from vitra_jax.handspace.episode import load_vitra_npy

    os.environ["HAND_VLA_WORKERS"] = "1" if beam else str(workers)
    beam_options = None
    if beam:
        from apache_beam.options.pipeline_options import PipelineOptions

        mode = "multi_processing" if workers > 1 else "in_memory"
        beam_options = PipelineOptions([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])
    with tempfile.TemporaryDirectory() as tmp:
        manual = layout_manual_dir(pathlib.Path(tmp) / "raw", fixtures, repeats)
        builder = hv.Builder(config="vitra1m", data_dir=os.path.join(tmp, "out"), file_format=file_format)
        start = time.perf_counter()
        config = tfds.download.DownloadConfig(manual_dir=str(manual), beam_options=beam_options)
        builder.download_and_prepare(download_config=config)
        seconds = time.perf_counter() - start
        episodes = sum(s.num_examples for s in builder.info.splits.values())
        if episodes != repeats:
            raise RuntimeError(f"built {episodes} of {repeats} episodes (skipped: {dict(builder.skipped)})")
    frames = episodes * len(load_vitra_npy(fixtures / f"{_STEM}.npy")["video_decode_frame"])
    return {"episodes": episodes, "frames": frames, "seconds": seconds,
            "episodes_per_s": episodes / seconds, "frames_per_s": frames / seconds}


def main(argv: list[str]) -> None:
    del argv
    fixtures = pathlib.Path(_FIXTURES.value)
    run_build(2, 1, _FORMAT.value, fixtures)  # warm-up: TF encoders and codecs initialise on first use
    r = run_build(_REPEATS.value, _WORKERS.value, _FORMAT.value, fixtures, _BEAM.value)
    print("| format | runner | workers | episodes | frames | seconds | episodes/s | frames/s |")
    print("|---|---|---|---|---|---|---|---|")
    runner = "beam direct" if _BEAM.value else "local"
    print(f"| {_FORMAT.value} | {runner} | {_WORKERS.value} | {r['episodes']} | {r['frames']} | {r['seconds']:.2f} | "
          f"{r['episodes_per_s']:.2f} | {r['frames_per_s']:.1f} |")


if __name__ == "__main__":
    app.run(main)
