"""The data section of a training recipe (`config.data`): which datasets, mixed how, prepared how.

    data_config()                                  # the procedural demo dataset, built on first use
    data_config(components=vitra1m_components("/data/frames"), build_demo=False, tokenizer="...")
    data_config(components=vitra1m_components(F) + oxe_components("/data/oxe", scale=0.1), ...)

A component is one frame store (or, for `kind='oxe'`, a converted OXE dataset) and one split; its weight
counts passes over its frames per epoch (`mixture.py`). Every field is documented where it is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from vitra_jax.data import mixture

KINDS = ("hand_vla", "oxe")


def component(name: str, path: str, weight: float = 1.0, kind: str = "hand_vla",
              split: str = "train") -> dict[str, Any]:
    """One mixture member as the config stores it: a frame store root (folders <split>/store.json) or a TFDS
    dataset folder (converted once to data_dir/frames/<name>); `name` is the OXE registry name for 'oxe'."""
    if kind not in KINDS:
        raise ValueError(f"unknown component kind {kind!r}; use one of {KINDS}")
    return {"name": name, "kind": kind, "path": path, "weight": float(weight), "split": split}


def vitra1m_components(frames_root: str) -> list[dict[str, Any]]:
    """The release's VITRA-1M mixture (`magic_mix`): one frame store per sub-dataset at frames_root/<name>."""
    return [component(name, f"{frames_root}/{name}", weight) for name, weight in mixture.MAGIC_MIX.items()]


def oxe_components(oxe_root: str, weights: Mapping[str, float] | None = None,
                   scale: float = 1.0) -> list[dict[str, Any]]:
    """OXE members at oxe_root/<name> (a TFDS dataset folder or its parent holding version folders);
    default weights: octo's magic soup (`oxe.MAGIC_SOUP`), times `scale` (the share next to hand data)."""
    from vitra_jax.data import oxe

    weights = oxe.MAGIC_SOUP if weights is None else weights
    return [component(name, f"{oxe_root}/{name}", w * scale, kind="oxe") for name, w in weights.items()]


def saved_data_config(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """The data section a run recorded (its config.json), with defaults for fields added since it was written."""
    c = data_config()
    c.update(saved)
    return c


def data_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Defaults for the procedural demo dataset; keyword arguments replace fields (unknown names raise)."""
    c = ml_collections.ConfigDict()
    c.data_dir = "data"                # root of TFDS builds and frame stores (the demo is built here)
    # mixture members, see `component`; empty = the demo dataset under data_dir (with build_demo)
    c.components = []
    c.build_demo = True                # build (TFDS, array_record) + convert the `demo` hand_vla set if missing
    c.demo_config = "demo"             # which procedural set: 'demo' (8 episodes) or 'demo_large' (32)
    c.tokenizer = ""                   # tokenizer.model; '' = data_dir/tokenizer/tokenizer.model
    c.tokenizer_vocab = 0              # > 0: train a sentencepiece model of this size if `tokenizer` is missing
    c.statistics = ""                  # normalization json; '' = compute once per dataset and cache under data_dir
    c.compute_statistics = True        # False: a missing statistics file is an error (MissingStatisticsError)
    # 'mixture': one set for every component (the release's weighted average); 'embodiment': the hand datasets
    # share one set, each OXE dataset is normalized by its own (statistics.MixtureStatistics)
    c.normalize_by = "mixture"
    c.augment = False                  # trajectory-aware augmentation (crop/warp, flip, colour), VITRA §3.4
    c.augment_config = ml_collections.ConfigDict()  # AugmentConfig field overrides
    c.state_dropout = 0.1              # with augmentation: P(both hand states dropped), release state_mask_prob
    c.rephrase = True                  # training text drawn among caption + rephrasings (False: the caption)
    c.num_workers = 0                  # grain worker processes (decode/augment); 0 = in-process
    c.worker_buffer = 2                # batches each worker prepares ahead
    c.read_threads = 1                 # threads per process reading (batches) ahead
    c.shuffle_seed = 0                 # mixture permutations; per-sample randomness also folds in the seed
    c.val_split = "val"                # split used by `val_batches` and `samples`
    c.episode_cache = 16               # episode records cached per worker (a sample reads one episode)
    c.chunk_len = 16                   # action steps per sample (the model's chunk length)
    c.unlock()
    for key, value in overrides.items():
        if key not in c:
            raise KeyError(f"unknown data config field {key!r}; known: {sorted(c.keys())}")
        # None marks a required field; a typed placeholder keeps it settable with --config.data.<key>=...
        c[key] = config_dict.placeholder(type(c[key])) if value is None else value
    return c
