"""Normalization statistics of the 102-d single-step actions and states, as the release computes them.

The loader computes them per mixture component on first use and caches them in the component's frame store
(`loader.source_statistics`); `python -m vitra_jax.data.prepare --config=...` does it ahead of a run.
The release (`calculate_statistics.py`) runs its dataset with augmentation on and a one-step action window
(`action_future_window_size=0`), and takes per-hand mean and std over the frames where that hand is valid;
a mixture then averages the per-dataset means and stds with weights ∝ mixture weight × frames (not a pooled
variance). Here `compute_statistics` streams episodes (the stored per-step `action`/`state` of hand_vla are
exactly those single-step values, each in its own camera) and `combine` does the weighted average.

Deliberate differences from the release (also in docs/data.md, "Statistics"):
- Flip: the release flips each sample with probability 0.5 (`flip_augmentation=1.0`); here every frame is
  counted once as is and once flipped (`trajectory.flip_horizontal`), the exact expectation of that coin,
  without its sampling noise. The release's random virtual-camera rotation (perspective crop, in-plane
  roll) is not applied: it is a per-sample random draw, and the statistics describe the camera-frame data.
- The last frame of an episode has no next frame; the release counts a zero-motion action there (and at the
  end of a secondary hand's caption interval), hand_vla masks it, so it is not counted.
- States drop the 10 MANO shape values (the model never sees them); `load_official` drops them too.
- `combine` leaves out, per dimension, the components in which that dimension was never valid (e.g. an OXE
  robot without a left hand); for the release's human datasets, where every dimension is valid, this is the
  release's weighted average. q01/q99 are combined the same way (an approximation: a weighted average of
  quantiles is not the quantile of the mixture).
- q01/q99 are added (the release has none): the lower order statistic at rank ⌊p·(n−1)⌋ (np.quantile
  method="lower") estimated by `QuantileSketch` in bounded memory, within relative error `RELATIVE_ERROR`
  plus `MIN_ABS` absolute for |q| ≤ `MAX_ABS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from absl import logging

from vitra_jax.data.running_stats import QuantileSketch, RunningMoments
from vitra_jax.handspace import layout
from vitra_jax.handspace.normalize import GaussianNormalizer
from vitra_jax.handspace.trajectory import flip_horizontal

# Bump when what is counted changes (flip, masks, fields): cached statistics keyed by it are recomputed.
TRANSFORM_VERSION = "1"
QUANTILES = (0.01, 0.99)
RELATIVE_ERROR = 0.002  # quantile sketch: relative error of the value
MIN_ABS = 1e-6  # values with |x| ≤ MIN_ABS share one bucket (absolute error ≤ MIN_ABS)
MAX_ABS = 1e4  # beyond this (metres or radians) the error bound no longer holds
OFFICIAL_FILL = 1e-4  # the release's value for missing left-hand statistics
_FLUSH_ROWS = 16384
_DIM = layout.ACTION_DIM


class MissingStatisticsError(FileNotFoundError):
    """No statistics file where one is needed; the message says how to compute it."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(
            f"normalization statistics not found at {path}; compute them ahead of the run with "
            "`python -m vitra_jax.data.prepare --config=<the training config>`, or let the run compute them "
            "(data.compute_statistics=True)")


class _Accumulator:
    """Moments and quantiles of one 102-d quantity, fed in buffered batches."""

    def __init__(self):
        self.moments, self.sketch = RunningMoments(_DIM), QuantileSketch(_DIM, RELATIVE_ERROR, MIN_ABS, MAX_ABS)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._rows = 0

    def add(self, x: np.ndarray, valid: np.ndarray) -> None:
        self._pending.append((x, valid))
        self._rows += len(x)
        if self._rows >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        x = np.concatenate([p[0] for p in self._pending])
        valid = np.concatenate([p[1] for p in self._pending])
        self._pending, self._rows = [], 0
        self.moments.update(x, valid)
        self.sketch.update(x, valid)

    def result(self) -> dict[str, np.ndarray]:
        self.flush()
        n = self.moments.n
        seen = n > 0
        return {"mean": np.where(seen, self.moments.mean, 0.0),
                "std": np.where(seen, np.sqrt(self.moments.m2 / np.maximum(n, 1)), 1.0),
                "q01": self.sketch.quantile(QUANTILES[0]), "q99": self.sketch.quantile(QUANTILES[1]),
                "count": n}


_FIELDS = ("mean", "std", "q01", "q99", "count")


@dataclasses.dataclass
class DatasetStatistics:
    """Per-dimension statistics (102,) of single-step actions and states over valid entries.

    A dimension never valid has mean 0, std 1, q01 = q99 = 0 and count 0 (normalizing leaves it as is).
    `count` is the number of valid entries (each frame counts twice with flip); NaN quantiles mean unknown
    (statistics read from the release's file).
    """

    action_mean: np.ndarray
    action_std: np.ndarray
    action_q01: np.ndarray
    action_q99: np.ndarray
    state_mean: np.ndarray
    state_std: np.ndarray
    state_q01: np.ndarray
    state_q99: np.ndarray
    num_frames: int
    num_episodes: int
    action_count: np.ndarray | None = None
    state_count: np.ndarray | None = None

    def __post_init__(self):
        for kind in ("action", "state"):
            if getattr(self, f"{kind}_count") is None:
                setattr(self, f"{kind}_count", np.full(_DIM, float(self.num_frames)))
            for field in _FIELDS:
                name = f"{kind}_{field}"
                v = np.asarray(getattr(self, name), np.float64)
                if v.shape != (_DIM,):
                    raise ValueError(f"statistics {name} must have shape ({_DIM},), got {v.shape}")
                setattr(self, name, v)
        self.num_frames, self.num_episodes = int(self.num_frames), int(self.num_episodes)

    def normalizer(self) -> GaussianNormalizer:
        return GaussianNormalizer(self.action_mean, self.action_std, self.state_mean, self.state_std)

    def to_dict(self) -> dict:
        """json-ready; `action.mean`/`std` etc. as GaussianNormalizer.from_dict reads them; NaN → null."""
        def listed(v):
            return [None if np.isnan(x) else float(x) for x in v]
        out: dict = {kind: {f: listed(getattr(self, f"{kind}_{f}")) for f in _FIELDS} for kind in ("action", "state")}
        out.update(num_frames=self.num_frames, num_episodes=self.num_episodes, transform_version=TRANSFORM_VERSION)
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> DatasetStatistics:
        try:
            arrays = {f"{kind}_{f}": np.array([np.nan if x is None else x for x in d[kind][f]], np.float64)
                      for kind in ("action", "state") for f in _FIELDS}
            return cls(**arrays, num_frames=d["num_frames"], num_episodes=d["num_episodes"])
        except (KeyError, TypeError) as e:
            raise ValueError(f"statistics lack or garble the field {e}") from None

    def save(self, path: str | os.PathLike, extra: Mapping | None = None) -> None:
        """Write json atomically (temp name, then rename); `extra` keys are stored beside the statistics."""
        _atomic_write_json(pathlib.Path(path), {**self.to_dict(), **(extra or {})})

    @classmethod
    def load(cls, path: str | os.PathLike) -> DatasetStatistics:
        path = pathlib.Path(path)
        if not path.is_file():
            raise MissingStatisticsError(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"statistics file {path} is not valid json: {e}") from None
        return cls.from_dict(d)

    def to_official(self) -> dict:
        """The release's `dataset_statistics.json` layout (61-d states: shape slots get mean 0, std 1)."""
        out: dict = {"num_traj": self.num_frames}
        for kind in ("state", "action"):
            shape = 10 if kind == "state" else 0
            for hand in layout.HANDS:
                sl = layout.hand_slice(hand)
                out[f"{kind}_{hand}"] = {"mean": getattr(self, f"{kind}_mean")[sl].tolist() + [0.0] * shape,
                                         "std": getattr(self, f"{kind}_std")[sl].tolist() + [1.0] * shape}
        return out


def _atomic_write_json(path: pathlib.Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _episode_arrays(ep: Mapping, kind: str) -> tuple[np.ndarray, np.ndarray]:
    mask_key = f"{kind}_mask"
    if kind not in ep or mask_key not in ep:
        raise ValueError(f"episode lacks '{kind}' or '{mask_key}' (has {sorted(ep)})")
    x, valid = np.asarray(ep[kind], np.float64), np.asarray(ep[mask_key])
    if x.ndim != 2 or x.shape[1] != _DIM:
        raise ValueError(f"episode {kind} must have shape (T, {_DIM}), got {x.shape}")
    if valid.shape == (len(x), 2):  # per-hand masks, as hand_vla stores them
        valid = layout.expand_hand_mask(valid)
    if valid.shape != x.shape:
        raise ValueError(f"episode {mask_key} must have shape {x.shape} or ({len(x)}, 2), got {valid.shape}")
    valid = valid.astype(bool)
    if not np.isfinite(x[valid]).all():
        raise ValueError(f"episode {kind} has NaN/inf in valid entries")
    return np.where(valid, x, 0.0), valid


def compute_statistics(episodes: Iterable[Mapping], *, flip: bool = True, progress: bool = True,
                       total: int | None = None) -> DatasetStatistics:
    """Statistics of per-step actions and states over the valid entries of `episodes`.

    Each episode holds `action`, `state` (T, 102) and `action_mask`, `state_mask` (T, 102) per dimension
    ((T, 2) per hand is accepted too). With `flip`, each frame also counts horizontally flipped.
    """
    from tqdm import tqdm

    acc = {"action": _Accumulator(), "state": _Accumulator()}
    frames = episodes_seen = 0
    for ep in tqdm(episodes, total=total, disable=not progress, desc="statistics", unit="episode"):
        for kind, a in acc.items():
            x, valid = _episode_arrays(ep, kind)
            a.add(x, valid)
            if flip:
                a.add(flip_horizontal(x), layout.swap_hands(valid))
        frames += len(ep["action"])
        episodes_seen += 1
    if not episodes_seen:
        raise ValueError("no episodes to compute normalization statistics from")
    res = {kind: a.result() for kind, a in acc.items()}
    return DatasetStatistics(**{f"{k}_{f}": res[k][f] for k in res for f in _FIELDS},
                             num_frames=frames, num_episodes=episodes_seen)


def combine(stats: Mapping[str, DatasetStatistics], weights: Mapping[str, float]) -> DatasetStatistics:
    """Mixture statistics: per dimension, the average of the components' mean, std, q01 and q99 weighted by
    mixture weight × frames, over the components where that dimension was ever valid (the release's rule)."""
    if not stats:
        raise ValueError("no statistics to combine")
    missing = sorted(set(stats) - set(weights))
    if missing:
        raise KeyError(f"no mixture weight for {missing} (weights given for {sorted(weights)})")
    names = sorted(stats)
    w = np.array([float(weights[n]) * stats[n].num_frames for n in names])
    if np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f"mixture weights × frames must be ≥ 0 with a positive sum, got {dict(zip(names, w))}")
    out: dict = {}
    for kind in ("action", "state"):
        seen = np.stack([getattr(stats[n], f"{kind}_count") > 0 for n in names])
        wd = w[:, None] * seen
        total = wd.sum(0)
        norm = wd / np.maximum(total, 1e-300)
        for f, empty in (("mean", 0.0), ("std", 1.0), ("q01", 0.0), ("q99", 0.0)):
            v = np.stack([getattr(stats[n], f"{kind}_{f}") for n in names])
            out[f"{kind}_{f}"] = np.where(total > 0, (norm * np.where(seen, v, 0.0)).sum(0), empty)
        out[f"{kind}_count"] = sum(getattr(stats[n], f"{kind}_count") for n in names)
    return DatasetStatistics(**out, num_frames=sum(s.num_frames for s in stats.values()),
                             num_episodes=sum(s.num_episodes for s in stats.values()))


NORMALIZE_BY = ("mixture", "embodiment")
HAND_GROUP = "hand_vla"


@dataclasses.dataclass(frozen=True)
class MixtureStatistics:
    """The statistics a mixture is normalized with: one set per group of components.

    `normalize_by='mixture'` (the release's rule) puts every component in one group, 'mixture', normalized with
    `combine` over all of them. 'embodiment' gives the hand datasets one group, 'hand_vla' (`combine` over
    them), and each OXE dataset its own, named as the dataset: a robot's actions are then normalized by its
    own statistics (as octo and OpenVLA do), not blended with hand motion or other robots' grippers.
    `default` is the group a run's `statistics.json` holds: 'hand_vla' when the mixture has hand data, else the
    first component's."""

    groups: dict[str, DatasetStatistics]
    group_of: dict[str, str]  # component name -> group name
    default: str

    @property
    def main(self) -> DatasetStatistics:
        return self.groups[self.default]

    def of(self, component: str) -> DatasetStatistics:
        return self.groups[self.group_of[component]]


def check_normalize_by(normalize_by: str) -> None:
    if normalize_by not in NORMALIZE_BY:
        raise ValueError(f"data.normalize_by must be one of {NORMALIZE_BY}, got {normalize_by!r}")


def mixture_statistics(stats: Mapping[str, DatasetStatistics], weights: Mapping[str, float],
                       kinds: Mapping[str, str], normalize_by: str = "mixture") -> MixtureStatistics:
    """Groups the components' statistics (ordered as `kinds`, name -> 'hand_vla' | 'oxe') as `normalize_by`
    says (`MixtureStatistics`) and combines each group with the mixture weights."""
    check_normalize_by(normalize_by)
    if normalize_by == "mixture":
        group_of = dict.fromkeys(kinds, "mixture")
    else:
        group_of = {name: HAND_GROUP if kind == HAND_GROUP else name for name, kind in kinds.items()}
        clash = [name for name, kind in kinds.items() if name == HAND_GROUP and kind != HAND_GROUP]
        if clash:
            raise ValueError(f"an OXE component may not be named {HAND_GROUP!r} (the hand datasets' group)")
    groups = {}
    for group in dict.fromkeys(group_of.values()):
        members = [name for name, g in group_of.items() if g == group]
        groups[group] = combine({n: stats[n] for n in members}, {n: weights[n] for n in members})
    default = HAND_GROUP if HAND_GROUP in groups else next(iter(group_of.values()))
    return MixtureStatistics(groups, group_of, default)


def fingerprint(*parts: str) -> str:
    """A short stable hash of the strings that identify a dataset (e.g. its dataset_info.json, a split)."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def user_cache_dir() -> pathlib.Path:
    """$VITRA_JAX_CACHE, else $XDG_CACHE_HOME/vitra_jax, else ~/.cache/vitra_jax; plus `statistics/`."""
    root = os.environ.get("VITRA_JAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "vitra_jax")
    return pathlib.Path(root) / "statistics"


def cache_name(data_fingerprint: str) -> str:
    return f"dataset_statistics_{fingerprint(data_fingerprint, TRANSFORM_VERSION)}.json"


def cached_statistics(cache_dir: str | os.PathLike, fingerprint: str,
                      compute: Callable[[], DatasetStatistics]) -> DatasetStatistics:
    """Statistics cached beside the data as `dataset_statistics_<hash>.json`, the hash taken over the data
    `fingerprint` and TRANSFORM_VERSION (a new recipe or new data never reuses old numbers); computed with
    `compute()` when absent. Where cache_dir cannot be written, the file goes to `user_cache_dir()`."""
    name = cache_name(fingerprint)
    key = {"fingerprint": fingerprint, "transform_version": TRANSFORM_VERSION}
    paths = [pathlib.Path(cache_dir) / name, user_cache_dir() / name]
    for path in paths:
        if path.is_file():
            try:
                d = json.loads(path.read_text())
                if {k: d.get(k) for k in key} == key:
                    stats = DatasetStatistics.from_dict(d)
                    logging.info("normalization statistics from %s", path)
                    return stats
            except (OSError, ValueError, AttributeError) as e:  # unreadable or not ours: compute afresh
                logging.warning("ignoring the statistics cache %s: %s", path, e)
    stats = compute()
    for path in paths:
        try:
            stats.save(path, extra=key)
            logging.info("normalization statistics written to %s", path)
            break
        except OSError as e:
            logging.warning("cannot write statistics to %s (%s); trying the next place", path, e)
    else:
        logging.warning("normalization statistics could not be cached anywhere: %s", [str(p) for p in paths])
    return stats


def load_official(path: str | os.PathLike) -> DatasetStatistics:
    """Statistics from the release's `dataset_statistics.json`: per hand `state_{hand}` (61-d: 51 + 10 MANO
    shape values, dropped) and `action_{hand}` (51-d) mean/std; left entries missing are filled with 1e-4
    as the release does (their count is 0). Quantiles are unknown (NaN)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise MissingStatisticsError(path)
    d = json.loads(path.read_text())
    num = int(d.get("num_traj", 0))
    out: dict = {}
    for kind, width in (("state", layout.HAND_DIM + 10), ("action", layout.HAND_DIM)):
        parts: dict[str, list[np.ndarray]] = {"mean": [], "std": [], "count": []}
        for hand in layout.HANDS:
            key = f"{kind}_{hand}"
            if key not in d and hand == "left":
                for f in ("mean", "std"):
                    parts[f].append(np.full(layout.HAND_DIM, OFFICIAL_FILL))
                parts["count"].append(np.zeros(layout.HAND_DIM))
                continue
            if key not in d:
                raise ValueError(f"{path}: the release's statistics need '{key}' (has {sorted(d)})")
            for f in ("mean", "std"):
                v = np.asarray(d[key].get(f, []), np.float64)
                if v.shape != (width,):
                    raise ValueError(f"{path}: {key}.{f} must have {width} values, got shape {v.shape}")
                parts[f].append(v[:layout.HAND_DIM])
            parts["count"].append(np.full(layout.HAND_DIM, float(num)))
        for f, v in parts.items():
            out[f"{kind}_{f}"] = np.concatenate(v)
        out[f"{kind}_q01"] = out[f"{kind}_q99"] = np.full(_DIM, np.nan)
    return DatasetStatistics(**out, num_frames=num, num_episodes=0)
