"""big_vision `.npz` import and our own checkpoint format.

big_vision stores one flat `np.savez` archive, keys joined with `/` (optionally under `params/`), bf16
arrays as 2-byte void (`|V2`). Our format is a directory with `params.npz` (same flat keys, fp32) and
`config.json` (the PaliGemmaConfig fields), written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import ml_dtypes
import numpy as np

from vitra_jax.models.gemma2 import Gemma2Config
from vitra_jax.models.paligemma import PaliGemmaConfig
from vitra_jax.models.siglip import SiglipConfig
from vitra_jax.weights import names
from vitra_jax.atomic_dirs import atomic_output_dir


def _recover_dtype(a: np.ndarray) -> np.ndarray:
    """void2 arrays are bf16 bit patterns; everything comes back as fp32."""
    if a.dtype.kind == "V" and a.dtype.itemsize == 2:
        a = a.view(ml_dtypes.bfloat16)
    return a.astype(np.float32)


def read_bigvision_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Flat `img/...`, `llm/...` arrays (fp32) from a big_vision PaliGemma npz."""
    with np.load(path, allow_pickle=False) as z:
        return {k.removeprefix("params/"): _recover_dtype(z[k]) for k in z.files}


def load_bigvision_npz(path: str | os.PathLike, cfg: PaliGemmaConfig) -> dict:
    """Param tree for `cfg` from a big_vision npz; a missing/extra/mis-shaped key raises naming it."""
    flat = read_bigvision_npz(path)
    names.check_tree(cfg, flat)
    return names.unflatten(flat)


def config_to_dict(cfg: PaliGemmaConfig) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(d: dict) -> PaliGemmaConfig:
    d = dict(d)
    return PaliGemmaConfig(vision=SiglipConfig(**d.pop("vision")), llm=Gemma2Config(**d.pop("llm")), **d)


def save_checkpoint(cfg: PaliGemmaConfig, params: dict, out_dir: str | os.PathLike) -> None:
    """Writes `params.npz` + `config.json` into a new directory (checked against `cfg` first)."""
    flat = {k: np.asarray(v, np.float32) for k, v in names.flatten(params).items()}
    names.check_tree(cfg, flat)
    with atomic_output_dir(out_dir) as tmp:
        np.savez(tmp / "params.npz", **flat)
        (tmp / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))


def load_checkpoint(path: str | os.PathLike) -> tuple[PaliGemmaConfig, dict]:
    """(config, params) from a directory written by `save_checkpoint`."""
    p = pathlib.Path(path)
    cfg = config_from_dict(json.loads((p / "config.json").read_text()))
    with np.load(p / "params.npz") as z:
        flat = {k: z[k] for k in z.files}
    names.check_tree(cfg, flat)
    return cfg, names.unflatten(flat)
