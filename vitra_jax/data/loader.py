"""The training-data pipeline: frame stores -> weighted mixture -> samples -> batches, as a grain iterator.

    pipeline = make_pipeline(data_config(), image_size=224, max_text_len=64)
    it = pipeline.train_iterator(batch_size=32, seed=0, process_index=jax.process_index(),
                                 process_count=jax.process_count())
    batch = next(it)          # the keys and dtypes of `models.policy.fake_batch`
    state = it.get_state()    # saved with the checkpoint; it.set_state(state) resumes at the same batch

Every frame of every component's split is a sample (`mixture.py` decides how often); the transforms are in
`transforms.py`. The stream is one endless grain `MapDataset` indexed by global sample number, so the
iterator state is a position, each process takes its block of rows of every global batch, and worker processes
(`num_workers`) decode and augment whole batches without changing which batch comes next.

With `build_demo` (and no components) the procedural `demo_config` hand_vla set is built (TFDS, ArrayRecord),
converted to a frame store, a tokenizer trained on its texts and statistics computed, all under `data_dir`,
each step skipped when its output exists.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
from collections.abc import Iterator

import grain
import ml_collections
import numpy as np
from absl import flags, logging

from vitra_jax.data import augment, mixture, oxe, statistics, transforms
from vitra_jax.data.config import KINDS
from vitra_jax.data.frames import FrameStore, open_store

DEMO = "demo"


class Pipeline:
    """Opened components, tokenizer and normalizers; makes training iterators and validation batches.

    `statistics` / `normalizer`: the run's own (`MixtureStatistics.main`, saved with its checkpoints);
    `normalization` holds every group's, and `normalizer_of(component)` is the one a component's samples use."""

    def __init__(self, cfg: ml_collections.ConfigDict, train: list[transforms.Source],
                 val: list[transforms.Source], weights: dict[str, float], tokenizer_path: str,
                 normalization: statistics.MixtureStatistics, *, image_size: int, max_text_len: int):
        from vitra_jax.tokenizer import Tokenizer

        self.cfg, self.train_sources, self.val_sources, self.weights = cfg, train, val, weights
        self.tokenizer_path = tokenizer_path
        self.tokenizer = Tokenizer(tokenizer_path)
        self.normalization = normalization
        self._normalizers = {g: st.normalizer() for g, st in normalization.groups.items()}
        self.statistics = normalization.main
        self.normalizer = self._normalizers[normalization.default]
        self.image_size, self.max_text_len = int(image_size), int(max_text_len)
        self._counts = dict.fromkeys(transforms.STAT_NAMES, 0.0)
        self._counts["samples"] = 0.0
        self._lock = threading.Lock()

    # -- building blocks ---------------------------------------------------------------------------------

    def sources(self, split: str) -> list[transforms.Source]:
        """The opened components of 'train' or of the validation split."""
        if split == "train":
            return self.train_sources
        if split == self.cfg.val_split:
            return self.val_sources
        raise ValueError(f"unknown split {split!r}: the pipeline has 'train' and {self.cfg.val_split!r}")

    def normalizer_of(self, component: str):
        """The normalizer of a component's samples (its group's, `MixtureStatistics`)."""
        return self._normalizers[self.normalization.group_of[component]]

    def components(self, split: str = "train", only: str | None = None) -> list[mixture.Component]:
        """The mixture of `split`'s components (with `only`, of that one alone)."""
        sources = self._sources(split, only)
        return [mixture.Component(s.name, s.store.num_frames, self.weights[s.name]) for s in sources]

    def _sources(self, split: str, only: str | None) -> list[transforms.Source]:
        sources = self.sources(split)
        if only is None:
            return sources
        picked = [s for s in sources if s.name == only]
        if not picked:
            raise ValueError(f"no component {only!r} with a {split!r} split (there are {[s.name for s in sources]})")
        return picked

    def dataset(self, *, seed: int, augment: bool, split: str = "train", rephrase: bool | None = None,
                process_index: int = 0, process_count: int = 1, rows: int = 1,
                only: str | None = None) -> grain.MapDataset:
        """Endless MapDataset of model-input examples (with `_stats`) for one process's shard: `rows`
        consecutive elements of every `rows × process_count` (`mixture.ProcessRows`); with `only`, of that
        component alone."""
        sources = self._sources(split, only)
        if not sources:
            raise ValueError(f"no component has a {split!r} split")
        cfg = self.cfg
        ds = mixture.ProcessRows(mixture.MixtureIndex(self.components(split, only), seed=seed), rows,
                                 process_index, process_count)
        rephrase = cfg.rephrase if rephrase is None else rephrase
        ds = ds.map(transforms.LoadSample(sources, seed=seed, chunk_len=cfg.chunk_len, rephrase=rephrase,
                                          cache_size=cfg.episode_cache))
        if augment:
            ds = ds.map(transforms.Augment(augment_config(cfg, self.image_size)))
        return ds.map(transforms.ToModelInputs(image_size=self.image_size, max_text_len=self.max_text_len,
                                               tokenizer_path=self.tokenizer_path,
                                               normalizers=[self.normalizer_of(s.name) for s in sources]))

    def _count(self, batch: dict) -> dict:
        """Adds the batch's `_stats` to the counters and returns the model keys as plain numpy arrays."""
        stats = batch.pop("_stats")
        with self._lock:
            for name, v in zip(transforms.STAT_NAMES, stats.sum(0)):
                self._counts[name] += float(v)
            self._counts["samples"] += len(stats)
        # Batches from worker processes arrive in shared memory; a copy frees it now instead of at
        # interpreter exit, where grain's SharedMemoryArray.__del__ fails noisily (env. notes §4).
        return {k: np.array(v) for k, v in batch.items()}

    # -- the interface the trainer uses ----------------------------------------------------------------

    def train_iterator(self, batch_size: int, *, seed: int, process_index: int = 0,
                       process_count: int = 1) -> grain.DatasetIterator:
        """Endless iterator of per-process batches; `get_state()`/`set_state()` give its exact position."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        cfg = self.cfg
        seed = mixture.derive_seed(cfg.shuffle_seed, seed)
        ds = self.dataset(seed=seed, augment=cfg.augment, process_index=process_index,
                          process_count=process_count, rows=batch_size)
        ds = ds.batch(batch_size, drop_remainder=True)
        it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, cfg.read_threads),
                                                     prefetch_buffer_size=max(1, cfg.read_threads)))
        if cfg.num_workers > 0:
            _mark_flags_parsed()
            it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers,
                                                                   per_worker_buffer_size=cfg.worker_buffer))
        return iter(it_ds.map(self._count))

    def val_batches(self, batch_size: int, num_batches: int, *, process_index: int = 0,
                    process_count: int = 1, only: str | None = None) -> list[dict]:
        """This process's rows of the first `num_batches` batches of the validation mixture (with `only`, of
        that component's validation split alone): fixed, no augmentation, captions only; read by
        `read_threads` threads."""
        ds = self.dataset(seed=self.cfg.shuffle_seed, augment=False, split=self.cfg.val_split, rephrase=False,
                          process_index=process_index, process_count=process_count, rows=batch_size, only=only)
        ds = ds.batch(batch_size, drop_remainder=True)[:num_batches]
        threads = max(1, self.cfg.read_threads)
        out = []
        for batch in ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=threads)):
            batch.pop("_stats")
            out.append(batch)
        return out

    def samples(self, split: str = "val", max_samples: int | None = None,
                per_component: int | None = None) -> Iterator[dict]:
        """Raw frame samples (image uint8 at stored size, unnormalized targets) of every frame of `split`,
        component by component, episode by episode; captions, no augmentation. With `per_component`, that many
        frames of each component, evenly spaced over its split. Each also names where it comes from:
        `component` (name), `episode` (index in the component's split) and `t` (frame in the episode)."""
        sources = self.sources(split)
        loader = transforms.LoadSample(sources, seed=0, chunk_len=self.cfg.chunk_len,
                                       cache_size=self.cfg.episode_cache)
        n = 0
        for c, src in enumerate(sources):
            frames = range(src.store.num_frames)
            if per_component is not None and per_component < len(frames):
                frames = np.linspace(0, len(frames) - 1, per_component).round().astype(int)
            for frame in frames:
                if max_samples is not None and n >= max_samples:
                    return
                episode, t = (int(v[0]) for v in src.store.locate(np.asarray([frame])))
                yield {**loader.load(c, frame, None), "component": src.name, "episode": episode, "t": t}
                n += 1

    def counters(self) -> dict:
        """Totals over the batches this process has taken: samples, truncated prompts, augmentation
        fallbacks, bytes read, and bytes read per sample."""
        with self._lock:
            out = dict(self._counts)
        out["bytes_per_sample"] = out["bytes_read"] / max(out["samples"], 1.0)
        return out


def _mark_flags_parsed() -> None:
    # grain's worker processes read absl flags; outside absl.app.run they are not parsed yet.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def augment_config(cfg: ml_collections.ConfigDict, image_size: int) -> augment.AugmentConfig:
    """The release's augmentation at the model's image height, with `state_dropout` and the overrides
    in `augment_config` (AugmentConfig field names)."""
    fields = {"height": image_size, "state_dropout": cfg.state_dropout, **cfg.augment_config.to_dict()}
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(augment.AugmentConfig)})
    if unknown:
        raise KeyError(f"data.augment_config has unknown fields {unknown}")
    return augment.AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


# -- opening components --------------------------------------------------------------------------------

def _is_store_root(path: pathlib.Path) -> bool:
    return any((p / "store.json").is_file() for p in path.iterdir()) if path.is_dir() else False


def _tfds_dir(path: pathlib.Path) -> pathlib.Path | None:
    """`path` if it is a TFDS dataset version folder, else its newest version subfolder, else None."""
    if (path / "dataset_info.json").is_file():
        return path
    versions = sorted((p for p in path.glob("*/dataset_info.json")), key=lambda p: _version_key(p.parent.name))
    return versions[-1].parent if versions else None


def _version_key(name: str) -> tuple:
    return tuple(int(x) if x.isdigit() else -1 for x in name.split("."))


def _frames_root(comp: dict, cfg: ml_collections.ConfigDict) -> pathlib.Path:
    """A component's frame store root; a TFDS build is converted once to data_dir/frames/<name>."""
    path = pathlib.Path(comp["path"])
    if _is_store_root(path):
        return path
    src = _tfds_dir(path)
    if src is not None:
        out = _data_dir(cfg) / "frames" / comp["name"]
        from vitra_jax.data import convert

        plan = convert.read_plan(out / comp["split"])
        made_from = plan["source"]["dir"] if plan is not None else None
        if made_from is not None and pathlib.Path(made_from).resolve() != src.resolve():
            raise ValueError(f"component {comp['name']!r}: {out} is converted from {made_from}, not from {src}; "
                             "remove that folder to convert this source, or give the component another name")
        if not (out / comp["split"] / "store.json").is_file():  # a rerun resumes an interrupted conversion
            image_key = oxe.get(comp["name"]).image_key if comp["kind"] == "oxe" else None
            logging.info("converting %s to a frame store at %s", src, out)
            convert.convert(src, out, image_key=image_key)
        return out
    raise FileNotFoundError(f"component {comp['name']!r}: {path} is neither a frame store root (folders with "
                            "store.json) nor a TFDS dataset folder (dataset_info.json)")


def _open(comp: dict, root: pathlib.Path, split: str) -> transforms.Source:
    entry = oxe.get(comp["name"]) if comp["kind"] == "oxe" else None
    store = open_store(root, split)
    source = store.info.get("source")
    held = source.get("name") if isinstance(source, dict) else None  # a converted TFDS dataset's name
    if held is not None and (held == "hand_vla") != (comp["kind"] == "hand_vla"):
        raise ValueError(f"component {comp['name']!r} has kind {comp['kind']!r} but {root} holds a {held!r} "
                         "dataset; hand_vla builds take kind 'hand_vla', OXE datasets kind 'oxe' and their "
                         "registry name")
    if comp["kind"] == "oxe" and held != comp["name"] and held in oxe.REGISTRY:
        raise ValueError(f"component {comp['name']!r}: {root} holds the OXE dataset {held!r}; its registry "
                         "entry (image key, action mapping) is chosen by the component name, so name it so")
    return transforms.Source(comp["name"], comp["kind"], store, entry)


def _data_dir(cfg: ml_collections.ConfigDict) -> pathlib.Path:
    if not cfg.data_dir:
        raise ValueError("data.data_dir is not set; it holds the demo build, converted TFDS datasets and the "
                         "default tokenizer")
    return pathlib.Path(cfg.data_dir)


def build_demo(data_dir: pathlib.Path, name: str = DEMO) -> pathlib.Path:
    """A procedural hand_vla set (builder config `name`: 'demo' or 'demo_large') as a frame store under
    data_dir/frames/<name> (built and converted if missing)."""
    out = data_dir / "frames" / name
    if _is_store_root(out):
        return out
    from tfds_builders.hand_vla.hand_vla_dataset_builder import Builder

    builder = Builder(config=name, data_dir=str(data_dir / "tfds"), file_format="array_record")
    builder.download_and_prepare()
    from vitra_jax.data import convert

    convert.convert(builder.data_dir, out)
    return out


def _texts(store: FrameStore) -> list[str]:
    """Every instruction, caption and rephrasing stored in a frame store's episodes."""
    texts: set[str] = set()

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif isinstance(node, np.ndarray) and node.dtype.kind in "SUO":
            for v in node.ravel():
                walk(v)
        elif isinstance(node, (bytes, str)):
            s = node.decode() if isinstance(node, bytes) else node
            if s.strip():
                texts.add(s.strip())

    for e in range(store.num_episodes):
        ep = store.episode(e)
        walk({k: v for k, v in ep.items() if k.startswith("language")})
    return sorted(texts)


def _tokenizer(cfg: ml_collections.ConfigDict, sources: list[transforms.Source]) -> str:
    path = pathlib.Path(cfg.tokenizer or _data_dir(cfg) / "tokenizer" / "tokenizer.model")
    if path.is_file():
        return str(path)
    if cfg.tokenizer_vocab <= 0:
        raise FileNotFoundError(f"tokenizer model not found at {path}; give data.tokenizer, or set "
                                "data.tokenizer_vocab > 0 to train one on the dataset's texts")
    from vitra_jax.tokenizer import train_sentencepiece

    texts = sorted({t for s in sources for t in _texts(s.store)})
    logging.info("training a %d-piece sentencepiece model on %d texts", cfg.tokenizer_vocab, len(texts))
    made = train_sentencepiece(texts, path.parent, cfg.tokenizer_vocab)
    if made != path:
        os.replace(made, path)
    return str(path)


def _episode_arrays(src: transforms.Source):
    """The per-step action/state arrays of every episode, as `statistics.compute_statistics` takes them."""
    for e in range(src.store.num_episodes):
        ep = src.store.episode(e)
        if src.kind == "oxe":
            yield oxe.episode_arrays(src.entry, ep)
        else:
            yield {"action": ep["action"], "action_mask": ep["action_mask"],
                   "state": ep["observation"]["state"], "state_mask": ep["observation"]["state_mask"]}


def source_statistics(src: transforms.Source, *, compute: bool = True,
                      progress: bool = False) -> statistics.DatasetStatistics:
    """One component's statistics, cached in its frame store folder and keyed by the store's fingerprint,
    the kind and the name (an OXE name chooses the mapping); computed on a miss when `compute`."""
    fp = statistics.fingerprint(src.store.info["fingerprint"], src.kind, src.name)

    def fit():
        if not compute:
            raise statistics.MissingStatisticsError(pathlib.Path(src.store.path) / statistics.cache_name(fp))
        # robot data is never mirrored (see transforms.Augment), so its statistics count no flips
        return statistics.compute_statistics(_episode_arrays(src), flip=src.kind == "hand_vla",
                                             progress=progress, total=src.store.num_episodes)
    return statistics.cached_statistics(src.store.path, fp, fit)


def resolve_components(cfg: ml_collections.ConfigDict) -> list[dict]:
    """The configured components as plain dicts (checked), or the demo set when none are given."""
    comps = [dict(c) for c in cfg.components]
    if not comps:
        if not cfg.build_demo:
            raise ValueError("data.components is empty and data.build_demo is off: nothing to train on (the "
                             "recipes take their datasets as an argument, e.g. --config=configs/pretrain.py:frames=DIR)")
        path = build_demo(_data_dir(cfg), cfg.demo_config)
        return [{"name": cfg.demo_config, "kind": "hand_vla", "path": str(path), "weight": 1.0, "split": "train"}]
    for c in comps:
        missing = {"name", "path"} - set(c)
        if missing:
            raise ValueError(f"data component {c} lacks {sorted(missing)}")
        c.setdefault("kind", "hand_vla")
        c.setdefault("weight", 1.0)
        c.setdefault("split", "train")
        if c["kind"] not in KINDS:
            raise ValueError(f"component {c['name']!r}: unknown kind {c['kind']!r}; use one of {KINDS}")
    names = [c["name"] for c in comps]
    if len(set(names)) != len(names):
        raise ValueError(f"data component names must be unique, got {names}")
    return comps


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A data config's opened components, tokenizer, per-component statistics (none with `data.statistics`)
    and the statistics the mixture is normalized with (`data.normalize_by`)."""

    train: list[transforms.Source]
    val: list[transforms.Source]
    weights: dict[str, float]
    tokenizer: str
    statistics: dict[str, statistics.DatasetStatistics]
    normalization: statistics.MixtureStatistics


def prepare(data_cfg: ml_collections.ConfigDict, *, progress: bool = False) -> Prepared:
    """Everything a run needs before its first batch, each step skipped when its output exists: the demo
    build, TFDS -> frame store conversion, the tokenizer, per-component statistics."""
    statistics.check_normalize_by(data_cfg.normalize_by)  # before any conversion or statistics pass
    if data_cfg.statistics and data_cfg.normalize_by != "mixture":
        raise ValueError(f"data.statistics gives one set of statistics for the whole mixture; with "
                         f"data.normalize_by={data_cfg.normalize_by!r} leave it empty (each group's are computed)")
    comps = resolve_components(data_cfg)
    train, val = [], []
    for c in comps:
        root = _frames_root(c, data_cfg)
        train.append(_open(c, root, c["split"]))
        if (root / data_cfg.val_split / "store.json").is_file():
            val.append(_open(c, root, data_cfg.val_split))
    weights = {c["name"]: float(c["weight"]) for c in comps}
    tok = _tokenizer(data_cfg, train)
    kinds = {s.name: s.kind for s in train}
    if data_cfg.statistics:  # one file replaces the mixture's statistics
        one = statistics.DatasetStatistics.load(data_cfg.statistics)
        return Prepared(train, val, weights, tok, {},
                        statistics.MixtureStatistics({"mixture": one}, dict.fromkeys(kinds, "mixture"), "mixture"))
    per = {s.name: source_statistics(s, compute=data_cfg.compute_statistics, progress=progress) for s in train}
    return Prepared(train, val, weights, tok, per,
                    statistics.mixture_statistics(per, weights, kinds, data_cfg.normalize_by))


def make_pipeline(data_cfg: ml_collections.ConfigDict, *, image_size: int, max_text_len: int) -> Pipeline:
    """Opens (building the demo if asked) every component, the tokenizer and the statistics."""
    p = prepare(data_cfg)
    return Pipeline(data_cfg, p.train, p.val, p.weights, p.tokenizer, p.normalization, image_size=image_size,
                    max_text_len=max_text_len)
