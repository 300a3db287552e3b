"""Torch-only inference of VITRA policies for the robot PC: never imports jax, flax, tensorflow, grain or orbax.

Public names (loaded on first use, so `vitra_jax.deploy.wire` stays importable without torch):
`DeployConfig` and `TorchVitraPolicy` (`policy.py`, the model), `DeployedPolicy` (`runner.py`, numpy in and
out with preprocessing, normalization and trajectories).
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {"DeployConfig": "policy", "TorchVitraPolicy": "policy", "DeployedPolicy": "runner"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
