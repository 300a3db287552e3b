"""The grain transforms from a mixture index entry to one model input, in pipeline order.

    {"component", "frame", "epoch", "index"}                  (mixture.MixtureIndex)
      -> LoadSample   raw frame sample: image (H, W, 3) uint8, instruction, fov (2,), state (102,),
                      state_mask (102,), actions (N, 102), action_mask (N, 102) + a per-sample rng
      -> Augment      trajectory-aware crop/warp, flip, colour, state dropout (augment.py)
      -> ToModelInputs images (S, S, 3) float32 in [-1, 1], tokens (L,) int32, input_mask (L,) bool, fov,
                      state/actions normalized then masked (observation.py, shared with the policy)

A sample reads frame t's image and its episode's small arrays only (a few episodes stay cached per
worker). Every random choice (caption wording, augmentation, dropout) draws from a generator seeded by
(seed, epoch, global index), so a sample does not depend on the worker or process that makes it.
Each element carries `_stats` (truncated prompt, augmentation fallback, bytes read) that the loader sums
and strips after batching.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import grain
import numpy as np

from vitra_jax.data import augment, chunks, observation, oxe
from vitra_jax.data.frames import FrameStore

STAT_NAMES = ("truncated", "augment_fallback", "bytes_read")


@dataclasses.dataclass
class Source:
    """One mixture component opened for reading: a frame store and how to turn its frames into samples."""

    name: str
    kind: str                          # 'hand_vla' | 'oxe'
    store: FrameStore
    entry: oxe.OxeEntry | None = None  # the registry entry (kind 'oxe')


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: a function of (seed, epoch, global index) only."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def _text(x) -> str:
    x = x.item() if isinstance(x, np.ndarray) else x
    return x.decode() if isinstance(x, bytes) else str(x)


def _store_bytes(store: FrameStore) -> int:
    return int(sum(store.read_bytes.values()))


class LoadSample(grain.transforms.Map):
    """Mixture entry -> raw frame sample (+ `rng`, `_stats`); rephrasings drawn only when `rephrase`."""

    def __init__(self, sources: list[Source], *, seed: int, chunk_len: int, rephrase: bool = False,
                 cache_size: int = 16):
        self.sources, self.seed, self.chunk_len = sources, int(seed), int(chunk_len)
        self.rephrase, self.cache_size = rephrase, int(cache_size)
        self._cache: collections.OrderedDict = collections.OrderedDict()

    def __getstate__(self):
        return {**self.__dict__, "_cache": collections.OrderedDict()}  # workers start with an empty cache

    def _episode(self, c: int, e: int) -> tuple[dict, Any]:
        key = (c, e)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        src = self.sources[c]
        steps = src.store.episode(e)
        tracks = chunks.episode_tracks(steps) if src.kind == "hand_vla" else None
        self._cache[key] = (steps, tracks)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return steps, tracks

    def load(self, c: int, frame: int, rng: np.random.Generator | None) -> dict:
        """The raw sample of frame `frame` (flat index within component c's split)."""
        src = self.sources[c]
        e, t = (int(v) for v in np.asarray(src.store.locate(np.asarray([frame]))).reshape(2))
        steps, tracks = self._episode(c, e)
        if src.kind == "hand_vla":
            image = src.store.image(e, t)
            main_hand = _text(steps["episode_metadata"]["main_hand"]) or "right"
            return chunks.frame_sample(steps, t, main_hand=main_hand, rng=rng, tracks=tracks, image=image,
                                       chunk_len=self.chunk_len)
        image = src.store.image(e, t, key=src.entry.image_key)
        return oxe.frame_sample(src.entry, steps, t, image=image, metadata=steps.get("episode_metadata"),
                                chunk_len=self.chunk_len)

    def map(self, record: dict) -> dict:
        c = record["component"]
        rng = sample_rng(self.seed, record["epoch"], record["index"])
        before = _store_bytes(self.sources[c].store)
        sample = dict(self.load(c, record["frame"], rng if self.rephrase else None))
        sample["rng"], sample["_kind"], sample["_component"] = rng, self.sources[c].kind, c
        stats = np.zeros(len(STAT_NAMES), np.float64)
        stats[STAT_NAMES.index("bytes_read")] = _store_bytes(self.sources[c].store) - before
        sample["_stats"] = stats
        return sample


class Augment(grain.transforms.Map):
    """`augment.augment_sample` (view, warp, flip, colour, state dropout) with the sample's own rng."""

    def __init__(self, augment_config: augment.AugmentConfig):
        self.augment_config = augment_config

    def map(self, sample: dict) -> dict:
        rng, cfg = sample["rng"], self.augment_config
        if sample["_kind"] != "hand_vla":
            # OXE actions live in the robot's base frame, not the camera's: a virtual camera rotation or a
            # mirror would corrupt them, so robot samples get colour jitter and state dropout only.
            out = dict(sample, image=augment.color_jitter(sample["image"], sample["instruction"], rng, cfg))
            if rng.random() < cfg.state_dropout:
                out["state"], out["state_mask"] = np.zeros_like(out["state"]), np.zeros_like(out["state_mask"])
            return out
        out = dict(augment.augment_sample(sample, rng, cfg))
        out["rng"], out["_kind"], out["_component"] = rng, sample["_kind"], sample["_component"]
        out["_stats"] = sample["_stats"].copy()
        out["_stats"][STAT_NAMES.index("augment_fallback")] += int(out.pop("augment_fallback", 0))
        return out


class ToModelInputs(grain.transforms.Map):
    """Raw (possibly augmented) sample -> the model's per-example arrays (`policy.fake_batch` keys) + `_stats`;
    state and actions normalized by `normalizers[c]` for a sample of component c."""

    def __init__(self, *, image_size: int, max_text_len: int, tokenizer_path: str, normalizers: list[Any]):
        self.image_size, self.max_text_len = int(image_size), int(max_text_len)
        self.tokenizer_path, self.normalizers = str(tokenizer_path), list(normalizers)
        self._tokenizer = None

    def __getstate__(self):
        return {**self.__dict__, "_tokenizer": None}  # each worker loads the SentencePiece model itself

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from vitra_jax.tokenizer import Tokenizer

            self._tokenizer = Tokenizer(self.tokenizer_path)
        return self._tokenizer

    def map(self, sample: dict) -> dict:
        tok = self.tokenizer
        text = sample["instruction"]
        # counted here rather than from the tokenizer's own counter, which reading threads share
        truncated = len(tok.encode_prompt(text)) > self.max_text_len
        tokens, mask = tok.batch_encode([text], self.max_text_len, truncate=True)
        stats = sample["_stats"].copy()
        stats[STAT_NAMES.index("truncated")] += float(truncated)
        n = self.normalizers[sample["_component"]]
        return {
            "images": observation.model_image(sample["image"], self.image_size),
            "tokens": np.asarray(tokens[0], np.int32),
            "input_mask": np.asarray(mask[0], bool),
            "fov": np.asarray(sample["fov"], np.float32),
            "state": observation.normalized_state(n, sample["state"], sample["state_mask"]),
            "state_mask": np.asarray(sample["state_mask"], np.float32),
            "actions": observation.normalized_actions(n, sample["actions"], sample["action_mask"]),
            "action_mask": np.asarray(sample["action_mask"], np.float32),
            "_stats": stats,
        }
