"""Per-dimension Gaussian normalization of 102-d actions and states (VITRA §2.7), numpy only.

`(x - mean) / (std + 1e-7)` with separate statistics for action and state; stored as a small json file
`{"action": {"mean": [...], "std": [...]}, "state": {...}}`. Computing statistics lives in the data package.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from vitra_jax.handspace import layout

EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class GaussianNormalizer:
    action_mean: np.ndarray
    action_std: np.ndarray
    state_mean: np.ndarray
    state_std: np.ndarray

    def __post_init__(self):
        for name, dim in (("action_mean", layout.ACTION_DIM), ("action_std", layout.ACTION_DIM),
                          ("state_mean", layout.STATE_DIM), ("state_std", layout.STATE_DIM)):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (dim,):
                raise ValueError(f"normalizer {name} must have shape ({dim},), got {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"normalizer {name} has non-finite values")
            object.__setattr__(self, name, v)
        for name in ("action_std", "state_std"):
            if np.any(getattr(self, name) < 0):
                raise ValueError(f"normalizer {name} has negative values")

    @classmethod
    def identity(cls) -> GaussianNormalizer:
        """Mean 0, std 1: leaves values (almost) unchanged."""
        return cls(np.zeros(layout.ACTION_DIM), np.ones(layout.ACTION_DIM),
                   np.zeros(layout.STATE_DIM), np.ones(layout.STATE_DIM))

    def normalize_action(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x) - self.action_mean) / (self.action_std + EPS)

    def unnormalize_action(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) * (self.action_std + EPS) + self.action_mean

    def normalize_state(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x) - self.state_mean) / (self.state_std + EPS)

    def unnormalize_state(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x) * (self.state_std + EPS) + self.state_mean

    def to_dict(self) -> dict:
        return {"action": {"mean": self.action_mean.tolist(), "std": self.action_std.tolist()},
                "state": {"mean": self.state_mean.tolist(), "std": self.state_std.tolist()}}

    @classmethod
    def from_dict(cls, d: dict) -> GaussianNormalizer:
        for key in ("action", "state"):
            for field in ("mean", "std"):
                if key not in d or field not in d[key]:
                    raise KeyError(f"normalizer statistics lack '{key}.{field}'")
        return cls(np.asarray(d["action"]["mean"]), np.asarray(d["action"]["std"]),
                   np.asarray(d["state"]["mean"]), np.asarray(d["state"]["std"]))

    def save(self, path: str | os.PathLike) -> None:
        """Write json atomically (temp name, then rename)."""
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GaussianNormalizer:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"normalizer statistics file not found: {path}")
        return cls.from_dict(json.loads(path.read_text()))
