"""Every GPU figure of docs/benchmarks.md in one call on a lent GPU machine, within a time budget.

    python3 -m vitra_jax.benchmarks.gpu [--wheels=.whl] [--out=$OUT] [--budget_s=540]
    python3 -m vitra_jax.benchmarks.gpu --dry_run --out=/tmp/gpu_dry     # the same plan, tiny, on a CPU

`--wheels`: a folder of wheels for the pins the machine lacks (docs/benchmarks.md, "Measuring on a GPU"),
installed with `pip --target` into `--site` and put first on every step's PYTHONPATH. Then, in order of value,
each step in its own process with a deadline cut from what is left of `--budget_s` (a step is skipped when less
than its floor is left):
1. `environment`: GPU, Python, and the versions and locations of the packages the steps import;
2. `train_step_b64`: the 3B train step at batch 64 with the recipe's remat, 10 timed steps (MFU, HFU);
3. `deploy_eager_graphs`: the 3B torch policy in bf16, eager and with CUDA graphs (latency, peak memory);
4. `deploy_compile`: the same with torch.compile, and compile + CUDA graphs;
5. `train_step_b64_accum2_dots` (GPUs with >= 120 GiB): batch 64 as 2 micro-batches, saving the weight
   products (0.5% recompute instead of 31%; the option docs/training.md gives for 80 GB GPUs).
Each step's output goes to OUT/<step>.log as it runs, so a step killed at its deadline keeps the rows it had
printed; OUT/report.md (also printed) lists every step's status and wall time and the end of its log.
`--dry_run` runs the same steps with tiny models on the CPU (what the tests do; there the torch policy skips
the CUDA-graph modes and torch.compile's inductor builds C++ kernels instead of Triton ones).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

from absl import app, flags

_WHEELS = flags.DEFINE_string("wheels", None, "Folder of .whl files to install first (no index, no deps).")
_SITE = flags.DEFINE_string("site", "/tmp/vitra_site", "Where --wheels are installed (pip --target).")
_OUT = flags.DEFINE_string("out", os.environ.get("OUT", "gpu_out"), "Folder for the logs and report.md.")
_BUDGET = flags.DEFINE_float("budget_s", 540.0, "Wall-clock seconds for all steps together.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Tiny models on the CPU: checks the plan without a GPU.")

REPO = pathlib.Path(__file__).resolve().parents[2]
TAIL_LINES = 40
ENV_SCRIPT = """
import importlib, importlib.metadata as md, platform, shutil, subprocess, sys
if shutil.which("nvidia-smi"):
    subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version",
                    "--format=csv"], check=False)
print("python", platform.python_version(), sys.executable)
for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml_collections", "grain", "numpy", "torch",
             "transformers", "tokenizers", "huggingface-hub", "safetensors", "websockets", "tensorboardX"):
    try:
        print(f"{name:<18}{md.version(name):<14}{md.distribution(name).locate_file('')}")
    except md.PackageNotFoundError:
        print(f"{name:<18}missing")
import jax
print("jax devices", jax.devices())
import torch
print("torch cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
"""


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]  # after the Python interpreter
    cap_s: float  # the most this step may take
    floor_s: float = 0.0  # skipped when less than this is left
    min_gpu_gib: float = 0.0  # skipped on GPUs with less memory (unknown memory: run)
    env: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass
class Outcome:
    step: str
    status: str  # 'ok', 'exit N', 'timeout after N s', 'skipped: ...'
    wall_s: float
    log: pathlib.Path | None


_DOTS = ("--grad_accum=2", "--remat=dots_with_no_batch_dims_saveable")


def plan(dry_run: bool) -> list[Step]:
    """The steps in order of value; `dry_run` swaps in tiny models on the CPU with the same flags otherwise."""
    mem = (("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92"),)
    train = ("-m", "vitra_jax.benchmarks.train_step", "--devices=0", "--mesh=1,1")
    deploy = ("-m", "vitra_jax.benchmarks.deploy")
    if dry_run:
        tiny = ("--variant=tiny", "--batch=4", "--steps=1", "--time")
        full = ("--full", "--full_device=cpu", "--variant=tiny", "--repeats=2", "--warmup=1", "--steps=2")
        return [Step("environment", ("-c", ENV_SCRIPT), 120),
                Step("train_step_b64", train + tiny, 240, 30, env=mem),
                Step("deploy_eager_graphs", deploy + full + ("--modes=eager,cuda_graphs",), 180, 30),
                Step("deploy_compile", deploy + full + ("--modes=compile,compile_cuda_graphs",), 120, 10),
                Step("train_step_b64_accum2_dots", train + tiny + _DOTS, 240, 30, 120.0, mem)]
    return [Step("environment", ("-c", ENV_SCRIPT), 60),
            Step("train_step_b64", train + ("--batch=64", "--steps=10"), 270, 150, env=mem),
            Step("deploy_eager_graphs", deploy + ("--full", "--modes=eager,cuda_graphs"), 180, 90),
            Step("deploy_compile", deploy + ("--full", "--modes=compile,compile_cuda_graphs"), 300, 120),
            Step("train_step_b64_accum2_dots", train + ("--batch=64", "--steps=10") + _DOTS, 270, 150, 120.0, mem)]


def install_wheels(wheels: pathlib.Path, site: pathlib.Path) -> None:
    """pip-installs every wheel in `wheels` into `site` (no index, no dependencies)."""
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        raise FileNotFoundError(f"no .whl files in {wheels}")
    site.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
                    "--target", str(site), *files], check=True)


def step_env(site: pathlib.Path | None, dry_run: bool) -> dict[str, str]:
    """The steps' environment: installed wheels, then this checkout, first on PYTHONPATH."""
    paths = ([str(site)] if site else []) + [str(REPO)]
    old = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths + ([old] if old else [])),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    if dry_run:  # one CPU device, as one GPU: no fake host devices
        flags_ = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", XLA_FLAGS=" ".join(flags_))
    return env


def gpu_memory_gib() -> float | None:
    """Memory of the first GPU from nvidia-smi, or None where it cannot be read."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=False)
    try:
        return float(out.stdout.split()[0]) / 1024
    except (IndexError, ValueError):
        return None


def run_steps(steps: list[Step], budget_s: float, out: pathlib.Path, env: dict[str, str],
              gpu_gib: float | None = None) -> list[Outcome]:
    """Runs `steps` in order within `budget_s`, each killed (with its children) at its deadline."""
    out.mkdir(parents=True, exist_ok=True)
    start, outcomes = time.monotonic(), []
    for step in steps:
        left = budget_s - (time.monotonic() - start)
        if gpu_gib is not None and gpu_gib < step.min_gpu_gib:
            outcomes.append(Outcome(step.name, f"skipped: {gpu_gib:.0f} GiB GPU < {step.min_gpu_gib:.0f}", 0, None))
            continue
        if left < max(step.floor_s, 1.0):
            outcomes.append(Outcome(step.name, f"skipped: {left:.0f} s of the budget left", 0, None))
            continue
        timeout = min(step.cap_s, left)
        log = out / f"{step.name}.log"
        print(f"[gpu] {step.name}: started, deadline {timeout:.0f} s", flush=True)
        t0 = time.monotonic()
        with open(log, "w") as f:
            f.write("$ python " + " ".join("<script>" if "\n" in a else a for a in step.argv) + "\n")
            f.flush()
            proc = subprocess.Popen([sys.executable, *step.argv], cwd=REPO, env={**env, **dict(step.env)},
                                    stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
                status = "ok" if rc == 0 else f"exit {rc}"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                status = f"timeout after {timeout:.0f} s"
        outcomes.append(Outcome(step.name, status, time.monotonic() - t0, log))
        print(f"[gpu] {step.name}: {status} ({outcomes[-1].wall_s:.0f} s)", flush=True)
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    """Markdown: a status table, then the end of each step's log."""
    lines = ["| step | status | wall s |", "|---|---|---|"]
    lines += [f"| {o.step} | {o.status} | {o.wall_s:.0f} |" for o in outcomes]
    for o in outcomes:
        if o.log is not None:
            tail = o.log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
            lines += ["", f"## {o.step} ({o.status})", "```", *tail, "```"]
    return "\n".join(lines) + "\n"


def main(argv) -> None:
    del argv
    out = pathlib.Path(_OUT.value)
    site = None
    if _WHEELS.value:
        site = pathlib.Path(_SITE.value)
        install_wheels(pathlib.Path(_WHEELS.value), site)
    outcomes = run_steps(plan(_DRY_RUN.value), _BUDGET.value, out, step_env(site, _DRY_RUN.value),
                         None if _DRY_RUN.value else gpu_memory_gib())
    text = report(outcomes)
    (out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    app.run(main)
