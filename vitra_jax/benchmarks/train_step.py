"""The full 3B VITRA train step compiled for a target mesh from `ShapeDtypeStruct`s (no weights needed), and
timed with real arrays on a GPU.

    python -m vitra_jax.benchmarks.train_step [--mesh=1,8] [--batch=64] [--grad_accum=1] [--remat=nothing_saveable]
        [--shard_axes=data,fsdp] [--devices=8] [--steps=10] [--noconstraints] [--hlo_out=step.hlo.txt]

The step is exactly the trainer's (`train.make_train_step` over `optim.make_optimizer` of the pretraining
recipe in `configs/base.py`: bf16 VLM compute with fp32 params, fp32 DiT, SigLIP frozen, AdamW, 8 noise draws
per VLM pass; `--grad_accum` micro-batches per step), jitted with the state's NamedShardings in and out, the
batch over all devices and the state donated. On CPU, `--devices` fakes that many XLA devices. Prints one table:
- state bytes per device (params + optimizer state), next to total / number of shards;
- the compiled memory analysis (arguments, outputs, temporaries) per device;
- the collectives in the compiled HLO, by kind and by direction (forward / backward op names); a scan body
  appears once in the HLO however many layers it runs;
- FLOPs per step from `metrics.flops_per_example`: model FLOPs (6·P·n for trained matmuls, 2·P·n for the frozen
  SigLIP, plus attention products; formula in `vitra_jax/metrics.py`) and with the rematerialised forward
  passes (hardware FLOPs), next to XLA's `cost_analysis()`, which counts each scan body once and so
  undercounts a scanned model;
- lowering and compile time; on a GPU also step time, examples/s, model TFLOP/s per device, MFU and HFU.
Measured figures: docs/benchmarks.md, "3B train step on 8 fake CPU devices".
"""

from __future__ import annotations

import collections
import contextlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

_MESH = flags.DEFINE_string("mesh", "1,8", "data,fsdp mesh sizes (-1 = all remaining devices).")
_BATCH = flags.DEFINE_integer("batch", 64, "Global batch size.")
_ACCUM = flags.DEFINE_integer("grad_accum", 1, "Micro-batches per step (gradient accumulation).")
_REMAT = flags.DEFINE_string("remat", "nothing_saveable", "VLM layer remat: 'none' or a jax.checkpoint_policies name.")
_SHARD_AXES = flags.DEFINE_string("shard_axes", "data,fsdp", "Mesh axes large params are sharded over.")
_DEVICES = flags.DEFINE_integer("devices", 8, "Fake CPU device count (CPU only; 0 = the real devices).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps with real arrays.")
_TIME = flags.DEFINE_bool("time", None, "Time --steps steps with real arrays (default: on a GPU/TPU only).")
_VARIANT = flags.DEFINE_enum("variant", "3b", ["tiny", "3b"], "Policy size.")
_CONSTRAINTS = flags.DEFINE_bool("constraints", True, "Trace under jax.set_mesh so the models' weight and "
                                  "activation constraints apply; false shows what GSPMD does alone.")
_HLO_OUT = flags.DEFINE_string("hlo_out", None, "Also write the compiled HLO text to this file.")

_KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_COLLECTIVE = re.compile(r"^\s*(?:ROOT )?%\S+ = (.*?) (" + "|".join(_KINDS) + r")(?:-start)?\(")
_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "s16": 2, "u16": 2,
          "s8": 1, "u8": 1, "pred": 1}


def collectives(hlo_text: str) -> dict[tuple[str, str], list[int]]:
    """(kind, 'forward' | 'backward') -> [count, bytes] over the collective instructions of compiled HLO text.

    Backward means the op name carries `transpose(` (JAX's reverse pass); bytes are result sizes per device
    per occurrence in the text (a scan body runs once per layer but appears once).
    """
    out: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    for line in hlo_text.splitlines():
        m = _COLLECTIVE.search(line)
        if not m:
            continue
        size = sum(_BYTES.get(t, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
                   for t, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", m.group(1)))
        name = re.search(r'op_name="([^"]*)"', line)
        direction = "backward" if name and "transpose(" in name.group(1) else "forward"
        entry = out[(m.group(2), direction)]
        entry[0] += 1
        entry[1] += size
    return dict(out)


def _config(mesh: tuple[int, int], shard_axes: tuple[str, ...], batch: int, remat: str, variant: str,
            grad_accum: int):
    from configs.base import base_config

    c = base_config()
    c.num_steps = 1000
    c.batch_size = batch
    c.grad_accum = grad_accum
    c.model.variant = variant
    c.model.remat_policy = remat
    c.optim.decay_steps = c.num_steps
    c.mesh.update(data=mesh[0], fsdp=mesh[1], shard_axes=shard_axes)
    return c


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main(_):
    if _DEVICES.value:
        jax.config.update("jax_num_cpu_devices", _DEVICES.value)  # before any backend starts; CPU only
    from vitra_jax import metrics, sharding, train
    from vitra_jax.models.policy import fake_batch

    mesh_shape = tuple(int(v) for v in _MESH.value.split(","))
    if len(mesh_shape) != 2:
        raise app.UsageError(f"--mesh must be 'data,fsdp', got {_MESH.value!r}")
    shard_axes = tuple(_SHARD_AXES.value.split(","))
    config = _config(mesh_shape, shard_axes, _BATCH.value, _REMAT.value, _VARIANT.value, _ACCUM.value)
    train.check_config(config, jax.process_count())
    run = train.create(config)
    mesh, pcfg, shardings = run.mesh, run.policy.cfg, run.shardings
    batch_sh = sharding.batch_sharding(mesh)
    example = fake_batch(pcfg, 1)
    abstract_batch = {k: jax.ShapeDtypeStruct((config.batch_size, *v.shape[1:]), v.dtype, sharding=batch_sh)
                      for k, v in example.items()}
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  run.abstract_state, shardings)
    step = jax.jit(train.make_train_step(run.policy, run.tx, config, run.labels),
                   in_shardings=(shardings, batch_sh), out_shardings=(shardings, None), donate_argnums=0)

    context = jax.set_mesh(mesh) if _CONSTRAINTS.value else contextlib.nullcontext()
    with context:  # the models' weight/activation constraints apply only under a mesh
        t0 = time.perf_counter()
        lowered = step.lower(abstract_state, abstract_batch)
        t1 = time.perf_counter()
        compiled = lowered.compile()
        t2 = time.perf_counter()

    leaves = jax.tree.leaves(abstract_state)
    total = sum(x.size * x.dtype.itemsize for x in leaves)
    per_device = sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize for x in leaves)
    n_shards = int(np.prod([mesh.shape[a] for a in shard_axes]))
    ratio = per_device / (total / n_shards)
    n_params = sum(x.size for x in jax.tree.leaves(run.abstract_state.params))
    mem = compiled.memory_analysis()
    flops = metrics.flops_per_example(pcfg, run.abstract_state.params, pcfg.max_text_len) * config.batch_size
    hw_flops = metrics.flops_per_example(pcfg, run.abstract_state.params, pcfg.max_text_len,
                                         recompute=True) * config.batch_size
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    seq = pcfg.vlm.num_image_tokens + pcfg.max_text_len + 2

    rows = [
        ("policy / parameters", f"{_VARIANT.value} / {n_params:,} "
                                f"(VLM {pcfg.vlm.dtype} compute, DiT {pcfg.dit.dtype})"),
        ("mesh (data, fsdp) / state sharded over", f"{dict(mesh.shape)} / {shard_axes} ({n_shards} shards)"),
        ("global batch × VLM tokens / DiT draws", f"{config.batch_size} × {seq} / {pcfg.repeats}"),
        ("micro-batches per step (grad_accum)", str(config.grad_accum)),
        ("remat (VLM layers) / model constraints", f"{pcfg.vlm.remat_policy} / {_CONSTRAINTS.value}"),
        ("state total (params + optimizer)", _gib(total)),
        ("state per device / (total / shards)", f"{_gib(per_device)} / {_gib(total / n_shards)} "
                                                f"= {ratio:.3f}× ({'within' if ratio <= 1.1 else 'over'} 1.1×)"),
        ("compiled: arguments per device", _gib(mem.argument_size_in_bytes)),
        ("compiled: outputs / aliased to arguments", f"{_gib(mem.output_size_in_bytes)} / "
                                                     f"{_gib(mem.alias_size_in_bytes)}"),
        ("compiled: temporaries per device", _gib(mem.temp_size_in_bytes)),
    ]
    hlo = compiled.as_text()
    if _HLO_OUT.value:
        with open(_HLO_OUT.value, "w") as f:
            f.write(hlo)
    found = collectives(hlo)
    for (kind, direction), (count, size) in sorted(found.items()):
        rows.append((f"HLO {kind} ({direction})", f"{count} ops, {size / 2**20:.1f} MiB per pass"))
    unexpected = sorted(k for k in found if k[0] not in ("all-gather", "all-reduce", "reduce-scatter"))
    rows += [
        ("collectives other than gathers / reductions", ", ".join(map(str, unexpected)) or "none"),
        ("FLOPs per step, analytic: model / with recompute", f"{flops:.3e} / {hw_flops:.3e}"),
        ("FLOPs per device, XLA cost_analysis (scan bodies once)", f"{float(cost.get('flops', 0.0)):.3e}"),
        ("lower / compile", f"{t1 - t0:.1f} s / {t2 - t1:.1f} s"),
    ]

    if _TIME.value or (_TIME.value is None and jax.devices()[0].platform in ("gpu", "tpu")):
        rows += _time_steps(run, config, shardings, step, mesh, flops, hw_flops)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}} | value")
    print(f"{'-' * width}-|-{'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}} | {value}")


def _time_steps(run, config, shardings, step, mesh, flops: float, hw_flops: float) -> list[tuple[str, str]]:
    """Real arrays: random init, fake batches; median step time over `--steps` after one warm-up."""
    from vitra_jax import metrics, sharding, train
    from vitra_jax.models.policy import fake_batch

    state = train.init_state(run.policy, run.tx, config, shardings)
    local = config.batch_size // jax.process_count()
    batch = sharding.shard_batch(fake_batch(run.policy.cfg, local), mesh)
    times = []
    with jax.set_mesh(mesh):
        for i in range(_STEPS.value + 1):
            t0 = time.perf_counter()
            state, out = step(state, batch)
            jax.block_until_ready(out["loss"])
            if i:
                times.append(time.perf_counter() - t0)
    dt = float(np.median(times))
    peak = metrics.peak_flops()
    rows = [("step time (median)", f"{dt * 1e3:.1f} ms"),
            ("examples/s", f"{config.batch_size / dt:.1f}"),
            ("TFLOP/s per device", f"{flops / dt / jax.device_count() / 1e12:.1f}"),
            ("loss after the timed steps", f"{float(jnp.asarray(out['loss'])):.4f}")]
    if peak:
        rows.append(("MFU (model FLOPs) / HFU (with recompute)", f"{flops / dt / (jax.device_count() * peak):.1%} / "
                                                            f"{hw_flops / dt / (jax.device_count() * peak):.1%}"))
    return rows


if __name__ == "__main__":
    app.run(main)
