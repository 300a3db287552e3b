"""The one-call GPU runner: its plan runs end to end (tiny, CPU), carried wheels are importable by every step,
deadlines kill a step with its children and keep what it printed, and a spent budget skips steps."""

import os
import pathlib
import re
import subprocess
import sys
import time
import zipfile

from vitra_jax.benchmarks import gpu

REPO = pathlib.Path(__file__).resolve().parents[2]


def _wheel(folder: pathlib.Path) -> pathlib.Path:
    """A minimal pure-Python wheel holding the module `vitra_probe_pkg`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vitra_probe_pkg-1.0-py3-none-any.whl"
    info = "vitra_probe_pkg-1.0.dist-info"
    files = {"vitra_probe_pkg/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: vitra-probe-pkg\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def test_carried_wheels_are_importable_by_the_steps(tmp_path):
    _wheel(tmp_path / "wheels")
    site = tmp_path / "site"
    gpu.install_wheels(tmp_path / "wheels", site)
    env = gpu.step_env(site, dry_run=True)
    out = subprocess.run([sys.executable, "-c", "import vitra_probe_pkg, vitra_jax; print(vitra_probe_pkg.VALUE, "
                          "vitra_jax.__file__)"], env=env, capture_output=True, text=True, cwd=tmp_path, check=True)
    value, where = out.stdout.split()
    assert value == "42" and pathlib.Path(where).is_relative_to(REPO)  # the checkout, not an installed copy


def test_deadline_kills_the_step_and_its_children_and_keeps_its_output(tmp_path):
    pid_file = tmp_path / "child.pid"
    slow = ("import subprocess, sys, time; child = subprocess.Popen(['sleep', '60']); "
            f"open({str(pid_file)!r}, 'w').write(str(child.pid)); print('partial row', flush=True); time.sleep(60)")
    steps = [gpu.Step("fine", ("-c", "print('hello')"), 30),
             gpu.Step("slow", ("-c", slow), 3),
             gpu.Step("fails", ("-c", "import sys; sys.exit(3)"), 30),
             gpu.Step("big_gpu", ("-c", "print('never')"), 30, min_gpu_gib=120),
             gpu.Step("late", ("-c", "print('never')"), 30, floor_s=1000)]
    t0 = time.monotonic()
    outcomes = gpu.run_steps(steps, budget_s=100, out=tmp_path / "out", env=gpu.step_env(None, True), gpu_gib=80)
    assert time.monotonic() - t0 < 30
    status = {o.step: o.status for o in outcomes}
    assert status["fine"] == "ok" and status["fails"] == "exit 3"
    assert status["slow"] == "timeout after 3 s"
    assert status["big_gpu"].startswith("skipped: 80 GiB GPU")
    assert re.fullmatch(r"skipped: \d+ s of the budget left", status["late"])
    assert "partial row" in (tmp_path / "out" / "slow.log").read_text()
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not pathlib.Path(f"/proc/{child}").exists() or "Z" in _proc_state(child)  # gone (or a zombie)
    text = gpu.report(outcomes)
    assert "| slow | timeout after 3 s |" in text and "partial row" in text and "hello" in text


def _proc_state(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"


def test_dry_run_of_the_gpu_plan_runs_every_step(tmp_path):
    """The plan's command lines with tiny models on the CPU: every flag exists and every step finishes."""
    wheels = tmp_path / "wheels"
    _wheel(wheels)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-m", "vitra_jax.benchmarks.gpu", "--dry_run", f"--out={tmp_path / 'o'}",
                          f"--wheels={wheels}", f"--site={tmp_path / 'site'}", "--budget_s=900"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = (tmp_path / "o" / "report.md").read_text()
    rows = dict(re.findall(r"^\| (\w+) \| ([^|]+) \|", report, re.M)[1:])
    assert rows == {s.name: "ok" for s in gpu.plan(dry_run=True)}, report
    logs = {name: (tmp_path / "o" / f"{name}.log").read_text() for name in rows}
    assert "jax devices" in logs["environment"]
    for name in ("train_step_b64", "train_step_b64_accum2_dots"):
        assert re.search(r"^step time \(median\)\s+\| [\d.]+ ms", logs[name], re.M), logs[name]
    dots = logs["train_step_b64_accum2_dots"]
    assert re.search(r"^remat \(VLM layers\) / model constraints\s+\| dots_with_no_batch_dims_saveable", dots, re.M)
    assert re.search(r"^micro-batches per step \(grad_accum\)\s+\| 2$", dots, re.M)
    # the 3B bundle's code path with the tiny policy: on a CPU without the CUDA-graph rows
    assert re.search(r"^eager\s+[\d.]+\s+[\d.]+\s+nan$", logs["deploy_eager_graphs"], re.M)
    assert "cuda_graphs" not in logs["deploy_eager_graphs"].split("p95 ms")[-1]
    assert re.search(r"^compile\s+[\d.]+\s+[\d.]+\s+nan$", logs["deploy_compile"], re.M), logs["deploy_compile"]
    # the real plan differs only in sizes: same modules, the GPU flags
    real = {s.name: s for s in gpu.plan(dry_run=False)}
    assert real.keys() == rows.keys()
    assert "--modes=eager,cuda_graphs" in real["deploy_eager_graphs"].argv
    assert real["train_step_b64_accum2_dots"].min_gpu_gib == 120
