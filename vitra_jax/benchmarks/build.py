"""Throughput of the hand_vla `vitra1m` build (TFDS generation: decode, targets, JPEG, write) on this CPU.

    python -m vitra_jax.benchmarks.build --repeats=40 [--workers=2] [--beam] [--undistort] [--file_format=array_record]

The official example episode (25 frames of a 480x368 clip) is laid out `--repeats` times as a VITRA-1M
manual_dir (symlinks), built into a temporary data_dir, and timed end to end after a 2-episode warm-up
build; prints one table. `--beam` builds through Beam's DirectRunner with `--workers` processes
(`direct_running_mode=multi_processing`) instead of the local process pool. `--undistort` treats the clip as
a raw Ego4D video with a synthetic omnidirectional calibration and undistorts every frame while building.
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
_UNDISTORT = flags.DEFINE_bool("undistort", False, "Undistort the (raw) frames on the fly.")
_FORMAT = flags.DEFINE_enum("file_format", "tfrecord", ["tfrecord", "array_record"], "Output file format.")
_FIXTURES = flags.DEFINE_string("fixtures", str(_FIXTURE), "Folder holding the example episode and clip.")


def layout_manual_dir(root: pathlib.Path, fixtures: pathlib.Path, repeats: int,
                      undistort: bool = False) -> pathlib.Path:
    """A VITRA-1M style manual_dir with `repeats` symlinked copies of the example episode (and, with
    `undistort`, a synthetic omnidirectional calibration of its 480×368 clip)."""
    import numpy as np

    ann = root / "Ego4D" / "episodic_annotations"
    ann.mkdir(parents=True)
    (root / "Ego4D" / "videos").mkdir()
    (root / "Ego4D" / "videos" / _VIDEO).symlink_to(fixtures / _VIDEO)
    if undistort:
        (root / "Ego4D" / "intrinsics").mkdir()
        calib = {"intrinsics_ori": {"K": np.array([[330.0, 0, 238], [0, 331.0, 186], [0, 0, 1]]),
                                    "D": np.array([-0.1, 0.02, 0.0005, -0.001]), "xi": np.array(0.7)},
                 "intrinsics_new": {"K": np.array([[300.0, 0, 240], [0, 300.0, 184], [0, 0, 1]])}}
        np.save(root / "Ego4D" / "intrinsics" / f"{pathlib.Path(_VIDEO).stem}.npy", calib, allow_pickle=True)
    for i in range(repeats):
        (ann / f"{_STEM}_{i:06d}.npy").symlink_to(fixtures / f"{_STEM}.npy")
    return root


def run_build(repeats: int, workers: int, file_format: str, fixtures: pathlib.Path,
              beam: bool = False, undistort: bool = False) -> dict[str, float]:
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
        manual = layout_manual_dir(pathlib.Path(tmp) / "raw", fixtures, repeats, undistort)
        config = hv.HandVlaConfig(name="vitra1m_raw", source="vitra1m", undistort=True) if undistort else "vitra1m"
        builder = hv.Builder(config=config, data_dir=os.path.join(tmp, "out"), file_format=file_format)
        start = time.perf_counter()
        download = tfds.download.DownloadConfig(manual_dir=str(manual), beam_options=beam_options)
        builder.download_and_prepare(download_config=download)
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
    r = run_build(_REPEATS.value, _WORKERS.value, _FORMAT.value, fixtures, _BEAM.value, _UNDISTORT.value)
    print("| format | runner | workers | undistort | episodes | frames | seconds | episodes/s | frames/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    row = [_FORMAT.value, "beam direct" if _BEAM.value else "local", _WORKERS.value, _UNDISTORT.value,
           r["episodes"], r["frames"], f"{r['seconds']:.2f}", f"{r['episodes_per_s']:.2f}", f"{r['frames_per_s']:.1f}"]
    print("| " + " | ".join(map(str, row)) + " |")


if __name__ == "__main__":
    app.run(main)
