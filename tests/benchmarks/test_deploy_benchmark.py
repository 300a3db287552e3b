"""The deploy benchmark runs at toy size and prints parseable figures; --full explains that it needs a GPU."""

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-m", "vitra_jax.benchmarks.deploy", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_tiny_cpu_benchmark_prints_jax_torch_and_served_latencies():
    out = _run("--repeats=3", "--warmup=1", "--steps=2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = dict(re.findall(r"^(jax predict_action|torch predict_action|torch served \(1 client\))\s+"
                           r"([\d.]+\s+[\d.]+)$", out.stdout, re.M))
    assert len(rows) == 3, out.stdout
    for fw, figures in rows.items():
        median, p95 = map(float, figures.split())
        assert 0 < median <= p95, (fw, median, p95)
    # both frameworks ran the same weights on the same noise
    diff = float(re.search(r"max\|normalized jax - torch\|=(\S+)", out.stdout).group(1))
    assert diff < 1e-3, out.stdout


def test_full_benchmark_on_cpu_explains_it_needs_a_gpu():
    out = _run("--full")
    assert out.returncode != 0
    assert "--full needs a CUDA GPU" in out.stderr + out.stdout
