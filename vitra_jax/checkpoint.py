"""Training checkpoints: train state, data-iterator position and run metadata saved together with orbax.

One step directory `WORKDIR/checkpoints/<step>/` holds
  state  the `TrainState` pytree (params, optimizer state, step, RNG), each array restored with its sharding;
  data   the grain iterator state of every process, so a resumed run sees exactly the batches it would have;
  meta   JSON: the resolved config, the parameter shapes (to refuse resuming into another model), the dataset
         statistics (inference needs them) and the step.
Saving is asynchronous; the last `keep_last` checkpoints are kept plus every `keep_every`-th step. A step directory
only appears once complete (orbax writes to a temporary name and renames), so a killed run never leaves a
half-written checkpoint that reads as valid.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from vitra_jax.weights import names


def param_shapes(params: dict) -> dict[str, list[int]]:
    """'a/b/c' -> shape of every leaf of a param tree (arrays or ShapeDtypeStructs)."""
    return {path: list(np.shape(v)) for path, v in names.flatten(params).items()}


def shape_mismatch(want: dict[str, list[int]], have: dict[str, list[int]], limit: int = 5) -> list[str]:
    """Human-readable differences between two `param_shapes` dicts (empty when they agree)."""
    out = [f"missing {k}" for k in sorted(set(want) - set(have))]
    out += [f"unexpected {k}" for k in sorted(set(have) - set(want))]
    out += [f"{k}: expected {want[k]}, found {have[k]}" for k in sorted(set(want) & set(have))
            if list(want[k]) != list(have[k])]
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


class Checkpointer:
    """An orbax `CheckpointManager` over `directory` for (state, data iterator, meta)."""

    def __init__(self, directory: str | pathlib.Path, *, every: int, keep_last: int = 3,
                 keep_every: int | None = None, async_save: bool = True):
        self.directory = pathlib.Path(directory).absolute()
        self.every = every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep_last, keep_period=keep_every or None,
                                               enable_async_checkpointing=async_save, create=True)
        self._mngr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state: Any, data_iterator: Any, meta: dict) -> None:
        """Starts saving (returns before the write finishes when asynchronous)."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=grain.checkpoint.CheckpointSave(data_iterator),
                                  meta=ocp.args.JsonSave(meta))
        self._mngr.save(step, args=args, force=True)

    def read_meta(self, step: int) -> dict:
        return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> Any:
        """The state at `step` (arrays placed as `abstract_state`'s shardings); `data_iterator` is moved to
        the saved position in place."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                  data=grain.checkpoint.CheckpointRestore(data_iterator))
        return self._mngr.restore(step, args=args)["state"]

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()


def restore_params(path: str | pathlib.Path, abstract_params: Any, tree: str = "params") -> Any:
    """Params of a vitra_jax checkpoint: a workdir, its `checkpoints/` folder, or one step directory.

    Only the train state's `tree` is read ("params", or "ema_params" for the moving average; not the optimizer
    state); shapes must match `abstract_params`."""
    path = pathlib.Path(path).absolute()
    if (path / "checkpoints").is_dir():
        path = path / "checkpoints"
    if (path / "state").is_dir():
        step_dir = path
    else:
        steps = sorted(int(p.name) for p in path.glob("[0-9]*") if p.is_dir())
        if not steps:
            raise FileNotFoundError(f"no vitra_jax checkpoint under {path}")
        step_dir = path / str(steps[-1])
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / "meta")
    problems = shape_mismatch(param_shapes(abstract_params), meta["param_shapes"])
    if problems:
        raise ValueError(f"checkpoint {step_dir} holds another model: " + "; ".join(problems))
    item = {tree: abstract_params}
    restored = ocp.PyTreeCheckpointer().restore(
        step_dir / "state", args=ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                                         partial_restore=True))
    return restored[tree]


def load_initial_params(init: Any, vlm_cfg: Any, params: Any) -> Any:
    """`params` (placed arrays) with the weights a config's `init` section names.

    `init.checkpoint`: every param of a vitra_jax checkpoint; `init.paligemma`: the `vlm` subtree from PaliGemma-2
    weights, an HF folder or a big_vision `.npz` (then the cognition token is re-copied from embedding row 10
    when `init.cognition_from_embedding`). Keys or shapes that do not fit raise one error naming them."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params)
    if init.checkpoint:
        return restore_params(init.checkpoint, abstract)
    if not init.paligemma:
        return params
    from vitra_jax.models.policy import init_cognition_from_embedding
    from vitra_jax.weights.hf import load_hf_paligemma
    from vitra_jax.weights.npz import load_bigvision_npz

    path = pathlib.Path(init.paligemma)
    vlm = load_bigvision_npz(path, vlm_cfg) if path.suffix == ".npz" else load_hf_paligemma(path)[1]
    problems = shape_mismatch(param_shapes(abstract["vlm"]), param_shapes(vlm))
    if problems:
        raise ValueError(f"PaliGemma weights at {path} do not fit the configured model: " + "; ".join(problems))
    vlm = jax.tree.map(lambda a, x: jax.device_put(np.asarray(x, a.dtype), a.sharding), abstract["vlm"], vlm)
    params = {**params, "vlm": vlm}
    return init_cognition_from_embedding(params) if init.cognition_from_embedding else params
