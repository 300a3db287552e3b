"""Train the VITRA policy: `python -m vitra_jax.train --config configs/pretrain.py --workdir DIR`.

Any config field can be overridden (`--config.batch_size=256`, `--config.optim.action_lr=3e-5`), and
`--config=configs/pretrain.py:VARIANT` passes VARIANT to the recipe. A `--workdir` that already holds
checkpoints resumes from the newest one, data-iterator position included, so a preempted or killed run
continues with exactly the batches it would have seen. SIGTERM saves a final checkpoint and exits. Launched as
several processes (`--coordinator_address`, or on a TPU pod / SLURM where JAX finds them itself), each process
reads its own shard of the data and process 0 writes logs.

Three parts: `init_state` (params from scratch, PaliGemma-2 weights or a vitra_jax checkpoint, then the
optimizer), `make_train_step` (one jitted, sharded, donated optimizer step) and `train` (the loop).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
from typing import Any
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import tqdm  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from flax import traverse_util  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vitra_jax import checkpoint as ckpt_lib  # noqa: E402
from vitra_jax import metrics as metrics_lib  # noqa: E402
from vitra_jax import distributed, optim, sharding  # noqa: E402
from vitra_jax.models import policy as policy_lib  # noqa: E402
from vitra_jax.models import variants  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training recipe (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: checkpoints, logs, TensorBoard events.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
PREEMPTED_EXIT = 143  # 128 + SIGTERM: saved and stopped early, as a scheduler's preemption expects


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; each step folds in the step number
    ema_params: Any = None


def check_config(config: ml_collections.ConfigDict, num_processes: int) -> None:
    """One clear error for a config that cannot run."""
    missing = [name for name, v in _flat_items(config) if v is None]
    if missing:
        raise ValueError(f"config fields required but not set: {', '.join(missing)} "
                         f"(set them in the recipe or with --config.<field>=...)")
    if config.batch_size % (num_processes * config.grad_accum):
        raise ValueError(f"batch_size {config.batch_size} must divide by processes × grad_accum "
                         f"({num_processes} × {config.grad_accum})")
    if config.init.paligemma and config.init.checkpoint:
        raise ValueError("set at most one of init.paligemma and init.checkpoint")


def absolute_paths(config: ml_collections.ConfigDict) -> None:
    """Relative data and weight paths made absolute (in place), so the run folder's config.json holds paths that
    work from any directory (evaluation, export)."""
    def fix(path):
        return path if not path or "://" in path else os.path.abspath(path)

    d = config.data
    d.data_dir, d.tokenizer, d.statistics = fix(d.data_dir), fix(d.tokenizer), fix(d.statistics)
    d.components = [{**c, "path": fix(c["path"])} for c in d.components]
    config.init.paligemma, config.init.checkpoint = fix(config.init.paligemma), fix(config.init.checkpoint)


def _flat_items(config: ml_collections.ConfigDict, prefix: str = ""):
    for k, v in config.items():
        if isinstance(v, ml_collections.ConfigDict):
            yield from _flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def init_state(policy: policy_lib.VitraPolicy, tx: optax.GradientTransformation,
               config: ml_collections.ConfigDict, shardings: Any) -> TrainState:
    """A fresh `TrainState` placed with `shardings`: init, pretrained weights, cognition token, optimizer."""
    key = jax.random.PRNGKey(config.seed)
    k_init, k_train = jax.random.split(key)

    def init_params(k):
        params = policy.init(k)
        return policy_lib.init_cognition_from_embedding(params) if config.init.cognition_from_embedding else params

    params = jax.jit(init_params, out_shardings=shardings.params)(k_init)
    params = ckpt_lib.load_initial_params(config.init, policy.cfg.vlm, params)

    def finish(params, rng):
        ema = params if config.optim.ema_decay > 0 else None
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng,
                          ema_params=ema)
    return jax.jit(finish, out_shardings=shardings)(params, k_train)


def split_micro_batches(x: jax.Array, accum: int) -> jax.Array:
    """(B, ...) -> (accum, B / accum, ...) where micro-batch i holds rows i, i + accum, i + 2·accum, ….

    Strided rather than contiguous: a batch sharded in row blocks over devices keeps every micro-batch spread
    over all of them, so splitting moves no rows between devices.
    """
    return x.reshape(x.shape[0] // accum, accum, *x.shape[1:]).swapaxes(0, 1)


def make_train_step(policy: policy_lib.VitraPolicy, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict, labels: Any) -> Callable:
    """`step(state, batch) -> (state, metrics)`; `labels` are the parameter groups (`optim.param_labels`)."""
    lrs = optim.learning_rates(config.optim)
    accum, decay = config.grad_accum, config.optim.ema_decay

    def loss_fn(params, batch, rng, counts=None):
        return policy.loss(optim.stop_frozen(params, labels), batch, rng, counts)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        if accum == 1:
            (loss, parts), grads = grad_fn(state.params, batch, rng)
        else:  # micro-batches in a scan, normalised by the whole batch's counts: their sum is its loss
            counts = policy.loss_counts(batch)
            micro = jax.tree.map(lambda x: split_micro_batches(x, accum), batch)

            def body(carry, xs):
                i, mb = xs
                (l, p), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i), counts)
                return jax.tree.map(jnp.add, carry, (l, p, g)), None
            (l0, p0), g0 = jax.eval_shape(grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng, counts)
            zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l0, p0, g0))
            (loss, parts, grads), _ = jax.lax.scan(body, zero, (jnp.arange(accum), micro))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if decay > 0:
            ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
        out = {"loss": loss, **parts, "grad_norm": optax.global_norm(grads), **lrs(state.step)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema_params=ema), out

    return step


MODEL_DEFINING = ("variant", "image_size", "max_text_len", "qk_norm")  # a resumed run may not change these


def model_meta(config: ml_collections.ConfigDict, state: TrainState) -> dict:
    """What a checkpoint records about its run (`meta` item), from the abstract train state."""
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {"config": json.loads(config.to_json_best_effort()), "param_shapes": ckpt_lib.param_shapes(state.params),
            "state_shapes": {jax.tree_util.keystr(p): list(x.shape) for p, x in leaves}}


def resume_problems(held: dict, now: dict) -> list[str]:
    """Why a run cannot continue from a checkpoint whose meta is `held` under a config whose meta is `now`: other
    parameter or optimizer-state shapes (the model, EMA on/off, optimizer settings such as clipping), or
    another model definition."""
    shapes = "state_shapes" if "state_shapes" in held else "param_shapes"  # older checkpoints record params only
    problems = ckpt_lib.shape_mismatch(now[shapes], held[shapes])
    then, model = held["config"].get("model", {}), now["config"]["model"]
    problems += [f"model.{k}: {then.get(k)!r} -> {model.get(k)!r}" for k in MODEL_DEFINING
                 if then.get(k) != model.get(k)]
    # the targets the weights learned would be normalized otherwise
    was, now_by = held["config"].get("data", {}).get("normalize_by", "mixture"), now["config"]["data"]["normalize_by"]
    if was != now_by:
        problems.append(f"data.normalize_by: {was!r} -> {now_by!r}")
    return problems


def changed_fields(held: dict, now: dict) -> list[str]:
    """`field: old -> new` for every config field a resumed run changes (learning rates, logging, ...)."""
    a, b = (traverse_util.flatten_dict(m["config"], sep=".") for m in (held, now))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _host(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _check_finite(step: int, values: dict[str, float]) -> None:
    for name in ("loss", "grad_norm"):
        if not np.isfinite(values[name]):
            raise FloatingPointError(
                f"{name} is {values[name]} at step {step}; stopping without saving this step (the checkpoints of "
                f"earlier steps are kept; one saved at step {step - 1} holds the parameters that gave this "
                f"{name}). Lower the learning rate or check the data.")


@dataclasses.dataclass(frozen=True)
class Run:
    """What a config builds before any data is read: model, optimizer, mesh and the state's layout."""

    policy: policy_lib.VitraPolicy
    tx: optax.GradientTransformation
    labels: Any  # parameter groups, `optim.param_labels`
    mesh: jax.sharding.Mesh
    abstract_state: TrainState  # of ShapeDtypeStructs
    shardings: TrainState  # of NamedShardings


def create(config: ml_collections.ConfigDict) -> Run:
    policy = policy_lib.VitraPolicy(variants.from_config(config.model))
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
    abstract_params = jax.eval_shape(policy.init, jax.random.PRNGKey(0))
    tx = optim.make_optimizer(config.optim, abstract_params)
    abstract_state = jax.eval_shape(
        lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                             rng=jax.random.PRNGKey(0), ema_params=p if config.optim.ema_decay > 0 else None),
        abstract_params)
    shardings = sharding.state_shardings(abstract_state, mesh, min_shard_size=config.mesh.min_shard_size,
                                         shard_axes=tuple(config.mesh.shard_axes))
    return Run(policy, tx, optim.param_labels(abstract_params, config.optim.freeze_vision), mesh, abstract_state,
               shardings)


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Runs (or resumes) training in `workdir`; returns this run's per-step losses, the final step and state,
    and the data pipeline's counters."""
    from vitra_jax.data import loader

    workdir = pathlib.Path(workdir)
    nproc, pid = jax.process_count(), jax.process_index()
    check_config(config, nproc)
    main_process = pid == 0
    with config.unlocked():
        absolute_paths(config)
        if config.optim.decay_steps == 0:
            config.optim.decay_steps = config.num_steps

    run = create(config)
    pcfg = run.policy.cfg
    pipeline = loader.make_pipeline(config.data, image_size=pcfg.vlm.image_size, max_text_len=pcfg.max_text_len)
    if config.val_every and not pipeline.val_sources:
        raise ValueError(f"val_every is {config.val_every} but no data component has a {config.data.val_split!r} "
                         "split; set val_every=0 to train without validation")
    if main_process:  # only now: a config that cannot run leaves no empty run folder behind
        workdir.mkdir(parents=True, exist_ok=True)
    policy, tx, mesh, shardings, abstract_state = run.policy, run.tx, run.mesh, run.shardings, run.abstract_state
    abstract_params = abstract_state.params
    batch_sharding = sharding.batch_sharding(mesh)
    step_fn = jax.jit(make_train_step(policy, tx, config, run.labels), in_shardings=(shardings, batch_sharding),
                      out_shardings=(shardings, None), donate_argnums=0)

    iterator = pipeline.train_iterator(config.batch_size // nproc, seed=config.seed, process_index=pid,
                                       process_count=nproc)
    ckpt = ckpt_lib.Checkpointer(workdir / "checkpoints", every=config.checkpoint.every,
                                 keep_last=config.checkpoint.keep_last, keep_every=config.checkpoint.keep_every,
                                 async_save=config.checkpoint.async_save)
    groups = pipeline.normalization.groups
    meta = {**model_meta(config, abstract_state), "statistics": pipeline.statistics.to_dict(),
            "statistics_groups": {name: st.to_dict() for name, st in groups.items()}}
    latest = ckpt.latest_step()
    if latest is not None:
        held = ckpt.read_meta(latest)
        problems = resume_problems(held, meta)
        if problems:
            raise ValueError(f"{workdir} holds a checkpoint of another model or optimizer (step {latest}): "
                             + "; ".join(problems) + ". Use a new --workdir, or the run's own settings.")
        changes = changed_fields(held, meta)
        if changes and main_process:
            print(f"resuming with changed settings: {'; '.join(changes)}")
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_state,
                              shardings)
        state = ckpt.restore(latest, target, iterator)
        if main_process:
            print(f"resumed from the checkpoint at step {latest} in {workdir}")
    else:
        state = init_state(policy, tx, config, shardings)
    start = int(state.step)
    if main_process:
        (workdir / "config.json").write_text(json.dumps(meta["config"], indent=1))
        metrics_lib.trim_log(workdir / "metrics.jsonl", start)
        pipeline.statistics.save(workdir / "statistics.json")
        if config.data.normalize_by == "embodiment":  # every group's, for export --statistics_group NAME
            shutil.rmtree(workdir / "statistics", ignore_errors=True)
            for name, st in groups.items():
                st.save(workdir / "statistics" / f"{name}.json")

    flops = metrics_lib.flops_per_example(pcfg, abstract_params, pcfg.max_text_len) * config.batch_size
    timer = metrics_lib.StepTimer(config.num_steps, config.batch_size, flops, jax.device_count(),
                                  metrics_lib.peak_flops())
    writer = metrics_lib.MetricWriter(str(workdir / "tensorboard") if main_process else None, resumed_from=start)
    eval_fn = jax.jit(lambda p, b: policy.loss(p, b, jax.random.PRNGKey(1))[0],
                      in_shardings=(shardings.params, batch_sharding))

    def mean_loss(params, batches) -> float:
        return float(np.mean([float(eval_fn(params, sharding.shard_batch(b, mesh))) for b in batches]))

    val = (pipeline.val_batches(config.batch_size // nproc, config.val_batches, process_index=pid,
                                process_count=nproc) if config.val_every else [])
    # each component's batches are made at every validation, not held: a mixture may have dozens; a small split
    # takes no more batches than it fills (the count is global, so every process runs as many)
    val_alone = ({s.name: min(config.val_batches, -(-s.store.num_frames // config.batch_size))
                  for s in pipeline.val_sources}
                 if val and config.val_by_component and len(pipeline.val_sources) > 1 else {})
    losses: dict[int, float] = {}
    pending = None  # metrics of the step in flight, fetched after the next step is dispatched
    stop = False  # SIGTERM received: save and leave
    with contextlib.ExitStack() as stack:
        preempt = distributed.Preemption()
        stack.callback(preempt.restore)
        stack.callback(ckpt.close)
        stack.callback(writer.close)
        log = stack.enter_context(open(workdir / "metrics.jsonl", "a")) if main_process else None
        bar = stack.enter_context(tqdm.tqdm(total=config.num_steps, initial=start, disable=not main_process,
                                            desc="train", dynamic_ncols=True))
        stack.enter_context(jax.set_mesh(mesh))
        for step in range(start + 1, config.num_steps + 1):
            batch = sharding.shard_batch(next(iterator), mesh)
            state, out = step_fn(state, batch)
            if step == start + 1:  # timing starts once the step is compiled and has run
                jax.block_until_ready(out)
                timer.start(step)
            if pending is not None:
                _write(log, *_record(*pending, losses))
            pending = (step, out)
            stop = preempt.requested(step)
            # no validation once preempted: the save must come within the grace period
            validate = bool(val) and step % config.val_every == 0 and not stop
            report = step % config.log_every == 0 or validate
            if report or ckpt.due(step) or stop or step == config.num_steps:
                _, values = _record(*pending, losses)
                pending = None
                if report:
                    values |= timer.measure(step)
                    if validate:
                        values["val_loss"] = mean_loss(state.params, val)
                        for name, batches in val_alone.items():
                            values[f"val_loss/{name}"] = mean_loss(state.params, pipeline.val_batches(
                                config.batch_size // nproc, batches, process_index=pid, process_count=nproc,
                                only=name))
                        timer.restart()  # validation is not training time
                    writer.scalars(step, values)
                    bar.set_postfix_str(metrics_lib.format_line(step, config.num_steps, values))
                _write(log, step, values)
                if ckpt.due(step) or stop or step == config.num_steps:
                    ckpt.save(step, state, iterator, {**meta, "step": step})
                    writer.flush()  # the logs of every saved step survive a kill
            bar.update(1)
            if stop:
                logging.warning("SIGTERM: saved step %d, exiting", step)
                break
    return {"losses": losses, "final_step": int(state.step), "state": state, "counters": pipeline.counters(),
            "preempted": stop}


def _record(step: int, out: dict, losses: dict) -> tuple[int, dict[str, float]]:
    """A step's metrics on the host; stops on a non-finite loss."""
    values = _host(out)
    _check_finite(step, values)
    losses[step] = values["loss"]
    return step, values


def _write(log, step: int, values: dict[str, float]) -> None:
    if log is not None:
        log.write(json.dumps({"step": step, **values}) + "\n")
        log.flush()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    # TFDS warns once per feature about its own use of a deprecated attribute while building a dataset.
    logging.get_absl_logger().addFilter(lambda record: "TensorInfo.dtype" not in record.getMessage())
    distributed.start(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    result = train(_CONFIG.value, _WORKDIR.value)
    if result["preempted"]:
        if jax.process_index() == 0:
            print(f"stopped by SIGTERM at step {result['final_step']} (saved); the same command resumes")
        raise SystemExit(PREEMPTED_EXIT)
    if jax.process_index() == 0 and result["losses"]:
        last = max(result["losses"])
        print(f"finished at step {result['final_step']}; loss at step {last}: {result['losses'][last]:.4f}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    try:
        app.run(main)
    except AttributeError as e:  # ml_collections' answer to a misspelt --config.<field>, raised while parsing
        if "Did you mean" not in str(e):
            raise
        text = str(e)
        with contextlib.suppress(ValueError, SyntaxError):
            text = ast.literal_eval(text)  # the message arrives as a repr
        raise SystemExit(f"vitra_jax.train: unknown config field {' '.join(text.split())}") from None
