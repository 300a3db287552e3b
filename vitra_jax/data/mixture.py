"""Weighted mixture of frame-level datasets as a lazy, checkpointable grain index (no data read here).

Semantics follow the release's `magic_mix` (VITRA §3.5 of the reference notes): within one epoch a component
with `n` frames and weight `w` contributes `round(w * n)` samples, drawn from fresh global permutations of its
frames (weight 5 = five different passes, weight 0.5 = half of one permutation, a different half each epoch);
the epoch is the shuffled union of all components' samples, and every epoch reshuffles. Permutations are
grain's constant-memory `index_shuffle` (small ranges: a cached numpy permutation), so the index costs no
memory per frame and element `k` of the stream is a pure function of (seed, k): a grain iterator over it
restores exactly from its position, and processes shard it by `k` in blocks of whole batch rows
(`ProcessRows`: disjoint, together covering every epoch, the same global batches for any process count).
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Mapping, Sequence

import grain
import numpy as np

# The release's VITRA-1M mixture (`magic_mix`): sub-dataset -> weight (samples per epoch = weight x frames).
MAGIC_MIX: dict[str, float] = {
    "ego4d_cooking_and_cleaning": 1.0,
    "egoexo4d": 3.0,
    "epic": 1.0,
    "ssv2": 5.0,
    "ego4d_other": 0.5,
}

_ROUNDS = 4  # Feistel rounds of grain's index shuffle (grain's own `shuffle` uses 4)
_EPOCH_TAG, _COMPONENT_TAG = 1, 2  # keep the stream-level and per-component seeds apart
# index_shuffle costs ~2 us per call on millions of items but ~1 ms on tens (it walks cycles over a fixed
# domain), so small ranges use a cached numpy permutation instead (at most 1 MiB each).
_SMALL = 1 << 18


@dataclasses.dataclass(frozen=True)
class Component:
    """One mixture member: `num_frames` samples per pass, `weight` passes per epoch (may be fractional)."""

    name: str
    num_frames: int
    weight: float

    def __post_init__(self):
        if self.num_frames <= 0:
            raise ValueError(f"mixture component {self.name!r} has no frames")
        if not self.weight > 0:
            raise ValueError(f"mixture component {self.name!r} needs a positive weight, got {self.weight}")

    @property
    def samples_per_epoch(self) -> int:
        return max(1, int(round(self.weight * self.num_frames)))


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed (what `index_shuffle` takes) from a tuple of non-negative integers (splitmix64 chain;
    numpy's SeedSequence does the same job but costs ~100x more per element)."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (int(p) & _MASK64))
    return h >> 32


@functools.lru_cache(maxsize=64)
def _small_permutation(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(size).astype(np.int32)


def permute(index: int, size: int, seed: int) -> int:
    """Position `index` of a seeded permutation of range(size)."""
    if size <= _SMALL:
        return int(_small_permutation(size, seed)[index])
    return int(grain.experimental.index_shuffle(int(index), max_index=size - 1, seed=seed, rounds=_ROUNDS))


class MixtureIndex(grain.MapDataset):
    """Element k -> {"component", "frame", "epoch", "index": k} (ints) of an endless weighted mixture.

    Length is `sys.maxsize` (endless, as grain's `repeat()`); `epoch_length` is the number of elements per epoch.
    """

    def __init__(self, components: Sequence[Component], seed: int):
        super().__init__()
        if not components:
            raise ValueError("a mixture needs at least one component")
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"mixture component names must be unique, got {names}")
        self.components = tuple(components)
        self.seed = int(seed)
        self._ends = np.cumsum([c.samples_per_epoch for c in self.components])
        self.epoch_length = int(self._ends[-1])

    def __len__(self) -> int:
        return sys.maxsize

    def __str__(self) -> str:
        return f"MixtureIndex({', '.join(f'{c.name}:{c.weight}x{c.num_frames}' for c in self.components)})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        k = int(index)
        epoch, pos = divmod(k, self.epoch_length)
        slot = permute(pos, self.epoch_length, derive_seed(self.seed, _EPOCH_TAG, epoch))
        c = int(np.searchsorted(self._ends, slot, side="right"))
        j = slot - (int(self._ends[c - 1]) if c else 0)
        n = self.components[c].num_frames
        rep, r = divmod(j, n)
        frame = permute(r, n, derive_seed(self.seed, _COMPONENT_TAG, c, epoch, rep))
        return {"component": c, "frame": frame, "epoch": epoch, "index": k}


class ProcessRows(grain.MapDataset):
    """One process's share of an endless stream, whole rows of every global batch.

    With `rows` samples per process and batch, global batch b is elements [b·rows·P, (b+1)·rows·P) of the
    stream and process p takes the p-th block of `rows` of it, so the global batch (processes concatenated in
    order, as `jax.make_array_from_process_local_data` does) is the same for any process count. rows = 1 is
    plain interleaving (k mod P = p).
    """

    def __init__(self, parent: grain.MapDataset, rows: int, process_index: int, process_count: int):
        super().__init__(parent)
        if rows <= 0:
            raise ValueError(f"rows per process must be positive, got {rows}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} must lie in [0, process_count={process_count})")
        self.rows, self.index, self.count = int(rows), int(process_index), int(process_count)

    def __len__(self) -> int:
        return len(self._parent) // self.count

    def __str__(self) -> str:
        return f"ProcessRows(rows={self.rows}, process={self.index}/{self.count})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        b, r = divmod(int(index), self.rows)
        return self._parent[(b * self.count + self.index) * self.rows + r]


def proportions(components: Sequence[Component]) -> dict[str, float]:
    """Expected share of each component in the stream: weight x frames / sum."""
    total = sum(c.samples_per_epoch for c in components)
    return {c.name: c.samples_per_epoch / total for c in components}


def components_from_weights(frames_by_name: Mapping[str, int], weights_by_name: Mapping[str, float]) -> list[Component]:
    """Components for the names in `weights_by_name` (frame counts looked up in `frames_by_name`)."""
    missing = sorted(set(weights_by_name) - set(frames_by_name))
    if missing:
        raise KeyError(f"no frame count for mixture components {missing}")
    return [Component(name, int(frames_by_name[name]), float(w)) for name, w in weights_by_name.items()]
