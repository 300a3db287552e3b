"""Sharding for training: the ('data', 'fsdp') mesh, FSDP rules by parameter path and size, batch placement,
and the two constraints the models apply to weights and activations.

Parameters (and every optimizer leaf that mirrors one) are sharded by `PARAM_RULES`, a table of
(path regex, tactic) read top to bottom, with the size rule as fallback: a leaf of at least `min_shard_size`
elements has its largest dimension divisible by the shard size split over the FSDP axes; anything smaller, and
norm scales and biases, stays replicated. The batch is split over every device (both axes), as in openpi.

Inside the models, `gather_weight` casts a weight to the compute dtype and constrains it to replicated right
before use, and `shard_activation` constrains the batch dimension of a matmul output to all devices. They act
only while a mesh is in context: trace (and call) the jitted step under `with jax.set_mesh(mesh):`. The
compiled 3B step then holds weight all-gathers, gradient reductions and the embedding lookup's reduction
only; GSPMD left to itself (no mesh in context) adds all-to-alls, collective-permutes and activation gathers,
about 4x the bytes (docs/training.md, "Sharding"). Without a mesh both are a plain cast / the identity, so
single-device numerics are unchanged bit for bit.

Deliberate differences from the release (PyTorch FSDP `shard-grad-op`, hybrid sharding, fp32 masters):
- the word embedding stays sharded over its vocabulary rows for the lookup instead of being gathered (as
  PyTorch FSDP gathers its module): the 3B lookup then costs an all-reduce of the text embeddings (36 MiB at
  global batch 64) and, backward, a gather of their cotangent, instead of a 2.4 GB fp32 table gather; the
  tied LM head is never computed in training;
- `fov_encoder` is replicated (5.3M parameters): its layers are plain `nn.Dense`s in `models/policy.py`
  without the constraints above, and sharding them made GSPMD add all-to-alls around them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over every device

# Tactics: "replicate", "fsdp" (the size rule), or a PartitionSpec in which the name FSDP stands for the shard
# axes. Patterns are searched in the full leaf path ('a/b/c'), so an optimizer moment whose path ends with a
# parameter's path gets that parameter's spec.
FSDP = "fsdp"
PARAM_RULES: tuple[tuple[str, Any], ...] = (
    (r"(^|/)(scale|bias)$", "replicate"),                    # norm gains and biases: small, used everywhere
    (r"(^|/)fov_encoder/", "replicate"),
    (r"(^|/)embedder/input_embedding$", P(FSDP, None)),      # vocabulary rows
    (r".", "fsdp"),
)
# Parameters stacked over layers by nn.scan: their leading (layer) dimension is never sharded, since the scan
# slices it once per iteration.
STACKED = r"(^|/)(layers|encoderblock|blocks)/"


def make_mesh(data: int = -1, fsdp: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Mesh with axes ('data', 'fsdp') and Auto axis types; -1 takes all remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ValueError("only one of data and fsdp may be -1")
    for name, v in (("data", data), ("fsdp", fsdp)):
        if v == 0 or v < -1:
            raise ValueError(f"mesh {name} size must be positive or -1, got {v}")
    if data == -1 or fsdp == -1:
        known = fsdp if data == -1 else data
        if n % known:
            raise ValueError(f"{n} devices do not split into a mesh with {known} along one axis")
        data, fsdp = (n // known, fsdp) if data == -1 else (data, n // known)
    if data * fsdp != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} = {data * fsdp} devices, but {n} are available")
    # Auto axes: jax.make_mesh defaults to Explicit, under which plain jit rejects GSPMD-style programs.
    return jax.make_mesh((data, fsdp), AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def _path_str(path) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _shard_axes(mesh: Mesh, axes: Sequence[str]) -> tuple[Any, int]:
    missing = [a for a in axes if a not in mesh.shape]
    if missing:
        raise ValueError(f"shard axes {missing} are not in the mesh axes {tuple(mesh.shape)}")
    size = math.prod(mesh.shape[a] for a in axes)
    entry = axes[0] if len(axes) == 1 else tuple(axes)
    return entry, size


def _size_rule(path: str, shape: tuple[int, ...], entry: Any, size: int, min_shard_size: int) -> P:
    if size == 1 or math.prod(shape) < min_shard_size:
        return P()
    first = 1 if re.search(STACKED, path) else 0
    dims = sorted(range(first, len(shape)), key=lambda d: (-shape[d], d))
    for d in dims:
        if shape[d] % size == 0:
            spec = [None] * len(shape)
            spec[d] = entry
            return P(*spec)
    return P()  # no dimension divides: replicated (only small odd-shaped leaves end here)


def _leaf_spec(path: str, shape: tuple[int, ...], rules, entry, size, min_shard_size) -> P:
    for pattern, tactic in rules:
        if not re.search(pattern, path):
            continue
        if tactic == "replicate":
            return P()
        if tactic == "fsdp":
            return _size_rule(path, shape, entry, size, min_shard_size)
        if not isinstance(tactic, P):
            raise TypeError(f"rule {pattern!r}: tactic must be 'replicate', 'fsdp' or a PartitionSpec")
        if len(tactic) > len(shape):
            raise ValueError(f"rule {pattern!r} gives {tactic} to {path} of rank {len(shape)}")
        spec = [entry if a == FSDP else a for a in tactic]
        for d, a in enumerate(spec):
            if a == entry and size > 1 and shape[d] % size:
                raise ValueError(f"rule {pattern!r}: {path} dim {d} ({shape[d]}) does not divide over {size} "
                                 "devices")
        return P(*spec) if size > 1 else P()
    return P()


def param_specs(abstract_tree: Any, mesh: Mesh, *, min_shard_size: int = 2**14,
                shard_axes: Sequence[str] = ("fsdp",), rules: Sequence[tuple[str, Any]] = PARAM_RULES) -> Any:
    """PartitionSpec tree for a tree of arrays or ShapeDtypeStructs.

    `shard_axes=('fsdp',)` replicates over 'data' (ZeRO within a group, as the release's hybrid sharding);
    `('data', 'fsdp')` shards every large leaf over all devices.
    """
    entry, size = _shard_axes(mesh, tuple(shard_axes))
    rules = tuple(rules)

    def spec(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return _leaf_spec(_path_str(path), shape, rules, entry, size, min_shard_size)

    return jax.tree_util.tree_map_with_path(spec, abstract_tree)


def state_shardings(abstract_state: Any, mesh: Mesh, **kw: Any) -> Any:
    """NamedSharding tree for a whole train state (params, optimizer state, counters).

    Optimizer moments mirror the param paths (e.g. '.../mu/vlm/llm/layers/mlp/linear'), so the path rules give
    them the param's spec; scalars (step, Adam count) are replicated. `kw` as for `param_specs`.
    """
    specs = param_specs(abstract_state, mesh, **kw)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over every device."""
    return NamedSharding(mesh, P(BATCH_AXES))


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays from this process's rows of the batch (the local batch; all rows on one host)."""
    sharding = batch_sharding(mesh)
    local = len(mesh.local_devices)
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] % local:
            raise ValueError(f"batch[{key!r}] has shape {value.shape}: its leading dimension must be a multiple "
                             f"of the {local} local devices")
        out[key] = jax.make_array_from_process_local_data(sharding, value)
    return out


# --- constraints used inside the models (no-ops without a mesh in context) ---------------------------------

def _context_mesh():
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def gather_weight(w: jax.Array, dtype: Any) -> jax.Array:
    """`w` cast to the compute dtype, then (under a mesh) constrained to replicated: one all-gather of the
    FSDP shards in the compute dtype, right before the weight is used."""
    w = w.astype(dtype)
    if _context_mesh() is None:
        return w
    return jax.lax.with_sharding_constraint(w, P())


def shard_activation(x: jax.Array) -> jax.Array:
    """Under a mesh, split dim 0 (batch) of an activation over every batch axis the mesh has; left
    unconstrained when the batch does not divide (e.g. one observation at inference)."""
    mesh = _context_mesh()
    if mesh is None or x.ndim == 0:
        return x
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
    n = math.prod(mesh.shape[a] for a in axes)
    if not axes or x.shape[0] % n:
        return x
    return jax.lax.with_sharding_constraint(x, P(axes))


def sharded_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kw):
    """`lax.dot_general` for flax's `nn.Dense(dot_general=...)`: gathers the (already cast) kernel and
    batch-shards the output. The batch must be dim 0 of `lhs`, as everywhere in our models."""
    out = jax.lax.dot_general(lhs, gather_weight(rhs, rhs.dtype), dimension_numbers, precision=precision,
                              preferred_element_type=preferred_element_type, **kw)
    return shard_activation(out)


def gathered_promote_dtype(*args, dtype=None, inexact: bool = True):
    """flax `promote_dtype` for `nn.Conv(promote_dtype=...)`: casts as flax does, then gathers the kernel."""
    from flax.linen.dtypes import promote_dtype

    inputs, kernel, *rest = promote_dtype(*args, dtype=dtype, inexact=inexact)
    return (inputs, gather_weight(kernel, kernel.dtype), *rest)

