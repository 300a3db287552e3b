"""Run folders of `vitra_jax.train`: read one step's params with the policy config, statistics and tokenizer
(`read_run`, used by the export and the release converter), or write a params-only one from imported weights
(`write_run_folder`, e.g. the release's `weights.pt`) that export and training both start from.

Layout: `checkpoints/<step>/{state,meta}` (orbax; meta holds the training config, param shapes, statistics
and, for imports, the policy config), `config.json`, `statistics.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

from vitra_jax import checkpoint as ckpt_lib
from vitra_jax.atomic_dirs import atomic_output_dir
from vitra_jax.data.statistics import DatasetStatistics, MissingStatisticsError
from vitra_jax.models.dit import DiTConfig
from vitra_jax.models.policy import PolicyConfig


class RunFolderError(ValueError):
    """A run folder without what was asked of it (a step, a moving average)."""


@dataclasses.dataclass(frozen=True)
class RunCheckpoint:
    """What an export needs from a run folder: the policy config, params of one step, statistics, tokenizer."""

    workdir: pathlib.Path
    step: int
    cfg: PolicyConfig
    params: Any
    statistics: DatasetStatistics
    tokenizer: pathlib.Path | None
    weights: str = "params"  # which tree of the train state: "params" or "ema_params"
    statistics_group: str | None = None  # a group of data.normalize_by='embodiment'; None: the run's own
    statistics_groups: tuple[str, ...] = ()  # every group the run recorded


def statistics_note(run: RunCheckpoint) -> str | None:
    """For a run normalized by embodiment exported with its own statistics: which those are, and the others."""
    if run.statistics_group is not None or len(run.statistics_groups) < 2:
        return None
    return (f"note: {run.workdir} was normalized by embodiment; writing its own statistics (statistics.json). For "
            f"a robot of one of its datasets give --statistics_group with one of {list(run.statistics_groups)}")


def policy_config_from_dict(d: dict) -> PolicyConfig:
    """Inverse of `dataclasses.asdict(PolicyConfig)` (the form checkpoint meta records)."""
    from vitra_jax.weights.npz import config_from_dict

    d = dict(d)
    return PolicyConfig(vlm=config_from_dict(d.pop("vlm")), dit=DiTConfig(**d.pop("dit")), **d)


def _step_dirs(workdir: pathlib.Path) -> dict[int, pathlib.Path]:
    root = workdir / "checkpoints"
    return {int(p.name): p for p in root.glob("[0-9]*") if p.is_dir() and p.name.isdigit()} if root.is_dir() else {}


def _tokenizer_path(meta_config: dict, override: str | os.PathLike | None) -> pathlib.Path:
    data = meta_config.get("data", {})
    if override:
        path = pathlib.Path(override)
    elif data.get("tokenizer"):
        path = pathlib.Path(data["tokenizer"])
    elif data.get("data_dir"):
        path = pathlib.Path(data["data_dir"]) / "tokenizer" / "tokenizer.model"
    else:
        raise FileNotFoundError("the run's config names no tokenizer (data.tokenizer / data.data_dir); pass --tokenizer")
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer model not found at {path} (give it with --tokenizer)")
    return path


def read_run(workdir: str | os.PathLike, step: int | None = None, tokenizer: str | os.PathLike | None = None,
             need_tokenizer: bool = True, ema: bool = False, statistics: str | None = None) -> RunCheckpoint:
    """The params of `step` (default: newest) of a run folder written by `vitra_jax.train` (or by
    `vitra_jax.release import`), with its policy config, statistics and tokenizer; with
    `ema`, the exponential moving average of the params the run kept (`optim.ema_decay > 0`) instead.
    `statistics` names one group of a run normalized by embodiment (an OXE dataset, or 'hand_vla'): the
    statistics a robot of that dataset unnormalizes with; default: the run's own (`statistics.json`).

    The policy config is the checkpoint meta's `policy_config` when present (official imports), else the
    recorded training config's `model` section through `variants.from_config`; the VLM is set to fp32."""
    import jax
    import orbax.checkpoint as ocp

    from vitra_jax.models import variants
    from vitra_jax.models.policy import VitraPolicy

    workdir = pathlib.Path(workdir).absolute()
    steps = _step_dirs(workdir)
    if not steps:
        raise FileNotFoundError(f"no checkpoints under {workdir / 'checkpoints'}: is {workdir} a vitra_jax run folder?")
    if step is None:
        step = max(steps)
    if step not in steps:
        raise RunFolderError(f"{workdir} has no checkpoint of step {step} (it has {sorted(steps)})")
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(steps[step] / "meta")
    if "policy_config" in meta:
        cfg = policy_config_from_dict(meta["policy_config"])
    else:
        import ml_collections

        cfg = variants.from_config(ml_collections.ConfigDict(meta["config"]["model"]))
    cfg = dataclasses.replace(cfg, vlm=dataclasses.replace(cfg.vlm, dtype="float32", remat_policy="none"))
    groups = meta.get("statistics_groups", {})
    if statistics is not None:
        if statistics not in groups:
            raise RunFolderError(f"{workdir} step {step} has no statistics named {statistics!r} "
                                 f"(it has {sorted(groups) or 'none by name'})")
        stats = DatasetStatistics.from_dict(groups[statistics])
    elif "statistics" in meta:
        stats = DatasetStatistics.from_dict(meta["statistics"])
    elif (workdir / "statistics.json").is_file():
        stats = DatasetStatistics.load(workdir / "statistics.json")
    else:
        raise MissingStatisticsError(workdir / "statistics.json")
    tok = _tokenizer_path(meta.get("config", {}), tokenizer) if need_tokenizer else None
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            jax.eval_shape(VitraPolicy(cfg).init, jax.random.PRNGKey(0)))
    if ema and not meta.get("config", {}).get("optim", {}).get("ema_decay", 0) > 0:
        raise RunFolderError(f"{workdir} kept no moving average of its params (optim.ema_decay is not > 0); "
                             "export without --ema")
    weights = "ema_params" if ema else "params"
    params = ckpt_lib.restore_params(steps[step], abstract, tree=weights)
    return RunCheckpoint(workdir, step, cfg, params, stats, tok, weights=weights, statistics_group=statistics,
                         statistics_groups=tuple(groups))


def write_run_folder(out: str | os.PathLike, params: Any, *, config: dict, statistics: Any | None = None,
                     policy_config: Any | None = None, step: int = 0, ema_params: Any | None = None) -> None:
    """A run folder holding one params-only checkpoint at `step`, as `checkpoint.restore_params` and
    `read_run` reads it: `checkpoints/<step>/{state,meta}`, `config.json` (`config`, the run's
    training config or the part of it that applies) and `statistics.json` (a `DatasetStatistics`).
    `policy_config` (a PolicyConfig) is recorded for models no training config names (official imports);
    `ema_params` are stored beside the params as the trainer stores its moving average."""
    import orbax.checkpoint as ocp

    meta = {"config": config, "param_shapes": ckpt_lib.param_shapes(params), "step": step}
    if statistics is not None:
        meta["statistics"] = statistics.to_dict()
    if policy_config is not None:
        meta["policy_config"] = dataclasses.asdict(policy_config)
    with atomic_output_dir(out) as tmp:
        options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
        with ocp.CheckpointManager(tmp / "checkpoints", options=options) as mngr:
            state = {"params": params} if ema_params is None else {"params": params, "ema_params": ema_params}
            mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)))
            mngr.wait_until_finished()
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        if statistics is not None:
            statistics.save(tmp / "statistics.json")
