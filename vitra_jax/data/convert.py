"""Convert a TFDS/RLDS dataset directory into frame stores (`vitra_jax.data.frames`), one per split.

    python -m vitra_jax.data.convert --src .../bridge_dataset/1.0.0 --out DIR [--split train,val] \
        [--image_key image_0] [--episodes_per_shard 1000] [--workers 8]

The source is read by directory (`tfds.builder_from_directory`; TFDS's registered OXE builders resolve to
cloud storage, so names are never looked up), TFRecord or ArrayRecord, shard by shard in file order; each
episode is decoded with the dataset's own feature spec, its images kept as the stored bytes. Output shards
hold `episodes_per_shard` episodes of one source shard. A shard is written under temporary names and
renamed, then its done marker is written; `store.json` of a split comes last. A killed conversion rerun
with the same arguments skips finished shards and ends with the same files as an uninterrupted one; a
split without `store.json` never opens as a store. `dataset_info.json` and `features.json` of the source
are copied to the output root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vitra_jax.data import frames

PLAN_FILE = "plan.json"


class ConvertError(ValueError):
    """The source or the output folder cannot be converted as asked."""


def _is_image(feature) -> bool:
    import tensorflow_datasets as tfds

    return isinstance(feature, tfds.features.Image)


def _items(feature):
    import tensorflow_datasets as tfds

    return feature.items() if isinstance(feature, tfds.features.FeaturesDict) else None


def image_keys_of(step_feature, prefix: str = "") -> list[str]:
    """'/'-joined paths of the Image features of a step FeaturesDict, sorted (TFDS's own order of a
    FeaturesDict differs between processes)."""
    out = []
    for name, f in sorted(_items(step_feature), key=lambda kv: kv[0]):
        if _is_image(f):
            out.append(prefix + name)
        elif _items(f) is not None:
            out += image_keys_of(f, prefix + name + "/")
    return sorted(out)


def feature_spec(feature) -> dict | str:
    """A JSON-able summary of a FeaturesDict: leaf -> "Class shape dtype"."""
    items = _items(feature)
    if items is not None:
        return {k: feature_spec(f) for k, f in sorted(items, key=lambda kv: kv[0])}
    inner = getattr(feature, "feature", None)
    if inner is not None:  # Sequence / Dataset
        return {type(feature).__name__: feature_spec(inner)}
    dtype = getattr(feature, "np_dtype", None)
    return f"{type(feature).__name__} {tuple(getattr(feature, 'shape', ()))} {np.dtype(dtype).name}"


def _conform(value, feature):
    """A decoded leaf as a numpy array with the spec's dtype (text as bytes; ragged stays a list)."""
    if _items(feature) is not None:
        return {k: _conform(v, feature[k]) for k, v in value.items()}
    dtype = np.dtype(getattr(feature, "np_dtype", object))
    if dtype.kind != "O":
        return np.asarray(value, dtype=dtype)
    arr = np.asarray(value, dtype=object)  # text, binary strings, or sequences of them
    if arr.size == 0:
        return np.zeros(arr.shape, "S1")
    items = [x.encode() if isinstance(x, str) else bytes(x) for x in arr.ravel()]
    if any(x.endswith(b"\0") for x in items):  # an 'S' array would drop the trailing NULs
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out.reshape(arr.shape)
    return np.array(items, dtype=bytes).reshape(arr.shape)


def _stack(values: list):
    if isinstance(values[0], dict):
        return {k: _stack([v[k] for v in values]) for k in values[0]}
    if len({v.shape for v in values}) > 1:
        return values  # ragged across steps: kept per step
    return np.stack(values)


def _drop(tree: dict, path: list[str]) -> object:
    node = tree
    for p in path[:-1]:
        node = node[p]
    return node.pop(path[-1])


def split_episode(episode: dict, features, image_keys: Sequence[str], all_image_keys: Sequence[str]):
    """One decoded episode (images undecoded) -> (record tree, {key: per-step image bytes})."""
    step_feature = features["steps"].feature
    steps = [episode["steps"][t] for t in range(len(episode["steps"]))]
    images = {k: [] for k in image_keys}
    rows = []
    for s in steps:
        for k in all_image_keys:
            b = _drop(s, k.split("/"))
            if k in images:
                images[k].append(bytes(b))
        rows.append(s)
    if not rows:
        raise ConvertError("episode has no steps")
    tree = _stack([_conform(r, step_feature) for r in rows])
    # RLDS keeps episode metadata either under `episode_metadata` (OXE) or at the top level (TFDS rlds).
    meta = episode["episode_metadata"] if "episode_metadata" in episode else \
        {k: v for k, v in episode.items() if k != "steps"}
    meta_feature = features["episode_metadata"] if "episode_metadata" in episode else features
    tree["episode_metadata"] = _conform(meta, meta_feature)
    return tree, images


def _raw_records(path: str, file_format: str, start: int, stop: int) -> Iterator[bytes]:
    if file_format == "array_record":
        from array_record.python.array_record_module import ArrayRecordReader

        reader = ArrayRecordReader(path, "readahead_buffer_size:16777216")
        try:
            for a in range(start, stop, 64):
                yield from reader.read(a, min(a + 64, stop))
        finally:
            reader.close()
    elif file_format == "tfrecord":
        import tensorflow as tf

        ds = tf.data.TFRecordDataset(path).skip(start).take(stop - start)
        yield from ds.as_numpy_iterator()
    else:
        raise ConvertError(f"source file format {file_format!r} is not supported (tfrecord, array_record)")


def _plan(builder, split: str, per_shard: int) -> list[tuple[str, int, int]]:
    """Output shards of a split as (source file, first episode, end episode)."""
    info = builder.info.splits[split]
    files = [str(p) for p in info.filepaths]
    lengths = list(info.shard_lengths)
    if len(files) != len(lengths):
        raise ConvertError(f"split {split}: {len(files)} files but {len(lengths)} shard lengths in dataset_info")
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise ConvertError(f"split {split}: source files missing: {missing[:3]}")
    return [(f, a, min(a + per_shard, n)) for f, n in zip(files, lengths) for a in range(0, n, per_shard)]


def _resolve_keys(image_key, available: list[str], dataset: str) -> list[str]:
    if image_key is None:
        # All cameras; the first is the default a reader gets: the OXE registry's primary camera if the
        # dataset has an entry, else the first by name (stable: image_0 before image_1).
        from vitra_jax.data import oxe

        primary = f"observation/{oxe.REGISTRY[dataset].image_key}" if dataset in oxe.REGISTRY else None
        return sorted(available, key=lambda k: (k != primary, k))
    asked = [image_key] if isinstance(image_key, str) else list(image_key)
    keys = []
    for k in asked:
        match = k if k in available else f"observation/{k}" if f"observation/{k}" in available else None
        if match is None:
            raise ConvertError(f"image key {k!r} is not an image feature of the source; images: {available}")
        keys.append(match)
    return keys


def _copy_metadata(src: Path, out: Path) -> None:
    for name in ("dataset_info.json", "features.json"):
        if (src / name).is_file():
            tmp = out / f"{name}.tmp-{os.getpid()}"
            shutil.copyfile(src / name, tmp)
            os.replace(tmp, out / name)


@dataclasses.dataclass(frozen=True)
class _Job:
    """One output shard: episodes [start, stop) of one source file."""

    src: str
    split_dir: str
    index: int
    count: int
    path: str
    start: int
    stop: int
    image_keys: tuple[str, ...]


_BUILDERS: dict = {}  # per process: source dir -> builder


def _run_job(job: _Job, on_episode=None) -> int:
    """Write one output shard; returns its episode count."""
    import tensorflow_datasets as tfds

    builder = _BUILDERS.get(job.src)
    if builder is None:
        builder = _BUILDERS[job.src] = tfds.builder_from_directory(job.src)
    features = builder.info.features
    all_keys = image_keys_of(features["steps"].feature)
    decoders = {"steps": _nested_skip(all_keys)}

    def episodes():
        for raw in _raw_records(job.path, builder.info.file_format.value, job.start, job.stop):
            ep = features.deserialize_example_np(raw, decoders=decoders)
            yield split_episode(ep, features, job.image_keys, all_keys)
            if on_episode is not None:
                on_episode()

    frames.write_shard(Path(job.split_dir), job.index, job.count, job.image_keys, episodes())
    return job.stop - job.start


def _check_plan(builder, split: str, out: Path, image_keys: list[str], per_shard: int) -> dict:
    """The record of what `out/split` is converted from and how; refuses a folder holding another one."""
    source = {"name": builder.info.name, "version": str(builder.info.version), "dir": str(builder.data_dir),
              "file_format": builder.info.file_format.value, "split": split,
              "shard_lengths": list(builder.info.splits[split].shard_lengths)}
    plan = {"source": source, "image_keys": image_keys, "episodes_per_shard": per_shard,
            "format_version": frames.FORMAT_VERSION}
    held = read_plan(out / split)
    if held is not None and held != plan:
        differ = sorted(k for k in plan if held.get(k) != plan[k])
        raise ConvertError(f"{out / split} holds a conversion of {held.get('source', {}).get('dir')} with other "
                           f"{' and '.join(differ)}; remove it or rerun with the same arguments")
    return plan


def read_plan(split_dir: Path) -> dict | None:
    """The plan a (finished or interrupted) conversion into `split_dir` follows: its source, image keys and
    shard size; None where no conversion started."""
    plan_file = split_dir / PLAN_FILE
    return json.loads(plan_file.read_text()) if plan_file.is_file() else None


def convert_split(builder, split: str, out: Path, shards: list[tuple[str, int, int]], plan: dict,
                  progress: bool = True, workers: int = 1) -> frames.FrameStore:
    """Convert one split of `builder` into `out/split` as `plan` says (`_check_plan`, with `shards` from
    `_plan`), resuming finished shards; `workers` > 1 writes shards in that many processes (same files)."""
    from tqdm import tqdm

    features = builder.info.features
    split_dir = out / split
    source, image_keys, per_shard = plan["source"], plan["image_keys"], plan["episodes_per_shard"]
    plan_file = split_dir / PLAN_FILE
    if plan_file.is_file():
        if (split_dir / frames.STORE_FILE).is_file():
            return frames.FrameStore(split_dir)
    else:
        frames.atomic_write_bytes(plan_file, json.dumps(plan, indent=1).encode())
    for stale in split_dir.rglob("*.tmp-*"):  # left by a killed run
        stale.unlink()

    count = len(shards)
    done = [frames.marker_path(split_dir, i, count).is_file() for i in range(count)]
    jobs = [_Job(str(builder.data_dir), str(split_dir), i, count, path, a, b, tuple(image_keys))
            for i, (path, a, b) in enumerate(shards) if not done[i]]
    total = sum(b - a for _, a, b in shards)
    with tqdm(total=total, initial=total - sum(j.stop - j.start for j in jobs), unit="ep",
              desc=f"{builder.info.name}/{split}", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            import multiprocessing

            # spawn: fresh interpreters, since TensorFlow state does not survive a fork
            with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for n in pool.imap_unordered(_run_job, jobs):
                    bar.update(n)
        else:
            for job in jobs:
                _run_job(job, on_episode=lambda: bar.update(1))
    info = {"source": source, "image_keys": image_keys, "episodes_per_shard": per_shard,
            "splits": {s: int(v.num_examples) for s, v in builder.info.splits.items()},
            "features": feature_spec(features), "features_file": "../features.json"}
    identity = {k: source[k] for k in ("name", "version", "split")} | {"image_keys": image_keys,
                                                                       "features": info["features"]}
    frames.finalize_split(split_dir, count, info, identity)
    return frames.FrameStore(split_dir)


def _nested_skip(keys: list[str]) -> dict:
    import tensorflow_datasets as tfds

    tree: dict = {}
    for k in keys:
        node = tree
        parts = k.split("/")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = tfds.decode.SkipDecoding()
    return tree


def convert(src: str | Path, out: str | Path, splits: Sequence[str] | str | None = None,
            image_key: str | Sequence[str] | None = None, episodes_per_shard: int = 1000,
            progress: bool = True, workers: int = 1) -> Path:
    """Convert the TFDS dataset directory `src` (`<name>/<version>` or `<name>/<config>/<version>`) into
    frame stores `out/<split>/`; returns `out`. `image_key`: keys to keep (default every image feature);
    `workers`: processes writing shards in parallel. One conversion per output folder at a time."""
    import tensorflow_datasets as tfds

    src, out = Path(src), Path(out)
    if not (src / "dataset_info.json").is_file():
        raise ConvertError(f"{src} is not a TFDS dataset directory (no dataset_info.json)")
    if episodes_per_shard < 1:
        raise ConvertError(f"episodes_per_shard must be >= 1, got {episodes_per_shard}")
    builder = tfds.builder_from_directory(str(src))
    available = list(builder.info.splits)
    splits = available if splits is None else [splits] if isinstance(splits, str) else list(splits)
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise ConvertError(f"splits {unknown} are not in {src}; available: {available}")
    all_keys = image_keys_of(builder.info.features["steps"].feature)
    if not all_keys:
        raise ConvertError(f"{src}: the steps have no image feature")
    keys = _resolve_keys(image_key, all_keys, builder.info.name)
    # every check before the first write: a refused conversion changes nothing
    plans = {split: (_plan(builder, split, episodes_per_shard),
                     _check_plan(builder, split, out, keys, episodes_per_shard)) for split in splits}
    out.mkdir(parents=True, exist_ok=True)
    _copy_metadata(src, out)
    for split, (shards, plan) in plans.items():
        convert_split(builder, split, out, shards, plan, progress, workers)
    return out


def main(argv) -> None:
    del argv
    splits = [s for s in _SPLIT.value.split(",") if s] if _SPLIT.value else None
    keys = [k for k in _IMAGE_KEY.value.split(",") if k] if _IMAGE_KEY.value else None
    try:
        out = convert(_SRC.value, _OUT.value, splits, keys, _PER_SHARD.value, workers=_WORKERS.value)
    except ConvertError as e:
        raise SystemExit(f"vitra_jax.data.convert: {e}") from None
    for split in splits or sorted(p.parent.name for p in out.glob(f"*/{frames.STORE_FILE}")):
        s = frames.open_store(out, split)
        print(f"{split}: {s.num_episodes} episodes, {s.num_frames} frames, images {list(s.image_keys)}, "
              f"fingerprint {s.info['fingerprint'][:12]}")


if __name__ == "__main__":
    # Flags are defined only when run as a program: the loader imports this module next to other CLIs.
    from absl import app, flags

    _SRC = flags.DEFINE_string("src", None, "TFDS dataset directory (holds dataset_info.json).", required=True)
    _OUT = flags.DEFINE_string("out", None, "Output folder; one frame store per split below it.", required=True)
    _SPLIT = flags.DEFINE_string("split", "", "Comma-separated splits (default: all).")
    _IMAGE_KEY = flags.DEFINE_string("image_key", "", "Comma-separated image keys to keep (default: all).")
    _PER_SHARD = flags.DEFINE_integer("episodes_per_shard", 1000, "Episodes per output shard (resume unit).")
    _WORKERS = flags.DEFINE_integer("workers", 1, "Processes writing shards in parallel.")
    app.run(main)
