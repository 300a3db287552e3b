"""Label a folder of egocentric videos: episode files that `tfds build hand_vla --config=episodes` reads.

    python -m preprocess.run --input VIDEOS --output OUT [--config FILE] [--config.video.max_width=640]
        [--workers N] [--runner local|ray] [--address HOST:PORT] [--captioner openai|none]
        [--hands mediapipe|precomputed|wilor|hawor] [--preview png|mp4]
    tfds build tfds_builders/hand_vla --config=episodes --manual_dir=OUT --data_dir=DATA

OUT (a local folder or an etils.epath URI) receives `episodes/{video_id}/{video_id}_{hand}_{start:06d}.npz
/.json`, the stage results in `work/` (a rerun skips everything finished there and writes identical
episodes), `cache/` (captioning answers), `config.json` (the settings the results depend on; a rerun must
use the same) and `summary.json` (also printed): videos, clips, episodes, drops and failures by reason, API
tokens and cost. A video that cannot be labelled is recorded as failed with its reason; the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from preprocess import config as config_lib
from preprocess import backends, errors, graph, store, summary

def _define_flags() -> None:
    """Flags of the command line only (the trainer also defines `--config`; tests import both modules)."""
    config_flags.DEFINE_config_file(
        "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py"),
        "Pipeline recipe (a .py file with get_config(); default preprocess/config.py).", lock_config=True)
    flags.DEFINE_string("input", None, "Folder of videos (or one video file).", required=True)
    flags.DEFINE_string("output", None, "Run folder: local path or etils.epath URI.", required=True)
    flags.DEFINE_integer("workers", 1, "Local runner: worker processes.")
    flags.DEFINE_enum("runner", "local", ["local", "ray"], "Where the stages run.")
    flags.DEFINE_string("address", None, "Ray: cluster address (default: start a local Ray).")
    flags.DEFINE_enum("captioner", None, ["openai", "none"], "Overrides caption.backend.")
    flags.DEFINE_enum("hands", None, ["mediapipe", "precomputed", "wilor", "hawor"], "Overrides hands.backend.")
    flags.DEFINE_enum("preview", None, ["png", "mp4"], "Overrides writer.preview.")


class SettingsMismatch(errors.ConfigError):
    """The output folder holds a run made with other result settings."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_settings(output: epath.Path, config, mano: str | None = None) -> None:
    """Save the result settings with a new run; refuse a rerun whose settings differ from the saved ones.
    `mano`: the MANO model file the hands are fitted with; its content counts, not its path."""
    path = output / "config.json"
    settings = json.loads(json.dumps(config_lib.result_settings(config)))
    if mano is not None:
        settings["hands"]["mano_sha256"] = hashlib.sha256(epath.Path(mano).read_bytes()).hexdigest()
    if path.exists():
        saved, now = _flat(json.loads(path.read_text())), _flat(settings)
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            raise SettingsMismatch(f"{output} holds a run made with other settings ({', '.join(changed)} "
                                   "differ); use a new --output or the same settings")
        return
    output.mkdir(parents=True, exist_ok=True)
    store.atomic_write(path, json.dumps(settings, indent=1, sort_keys=True).encode())


def label(input_path: str, output: str, config, *, runner: str = "local", workers: int = 1,
          address: str | None = None, ray_num_cpus: int | None = None) -> dict:
    """Run every stage on the videos of `input_path` into `output`; the summary (also saved)."""
    out = epath.Path(output)
    videos = graph.list_videos(input_path, config_lib.VIDEO_SUFFIXES)
    check_settings(out, config, backends.check_settings(config))
    run = graph.Run(config, str(out))
    if runner == "ray":
        from preprocess.runners import ray_runner
        ray_runner.execute(run, videos, address=address, num_cpus=ray_num_cpus)
    elif runner == "local":
        from preprocess.runners import local
        local.execute(run, videos, workers=workers)
    else:
        raise ValueError(f"runner must be local or ray, got {runner!r}")
    result = summary.summarize(run, videos)
    summary.save(run, result)
    return result


def main(argv) -> None:
    del argv
    f = flags.FLAGS
    config = f.config
    with config.unlocked():
        if f.captioner:
            config.caption.backend = f.captioner
        if f.hands:
            config.hands.backend = f.hands
        if f.preview:
            config.writer.preview = f.preview
    try:
        result = label(f.input, f.output, config, runner=f.runner, workers=f.workers, address=f.address)
    except errors.ConfigError as e:
        raise SystemExit(f"preprocess.run: {e}") from None
    print(summary.format_summary(result))
    print(f"summary: {epath.Path(f.output) / 'summary.json'}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
