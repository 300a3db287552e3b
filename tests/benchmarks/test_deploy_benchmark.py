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


def test_full_benchmark_refuses_unknown_modes():
    out = _run("--full", "--modes=eager,fast")
    assert out.returncode != 0
    assert "--modes: unknown ['fast']" in out.stderr + out.stdout


def _op_rows(steps: int) -> dict[str, tuple[int, int]]:
    out = _run("--count_ops", "--variant=tiny", f"--steps={steps}")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return {name.strip(): (int(a), int(b)) for name, a, b in
            re.findall(r"^(VLM prefix|denoise \(\d+ DDIM\)|total)\s+(\d+)\s+(\d+)$", out.stdout, re.M)}


def test_op_count_adds_up_and_grows_by_the_same_ops_per_denoising_step():
    rows = {steps: _op_rows(steps) for steps in (2, 4, 5)}
    for steps, r in rows.items():
        prefix, denoise, total = r["VLM prefix"], r[f"denoise ({steps} DDIM)"], r["total"]
        assert total == (prefix[0] + denoise[0], prefix[1] + denoise[1])
        assert 0 < prefix[1] < prefix[0] and 0 < denoise[1] < denoise[0]  # some ops are views, most not
    assert rows[2]["VLM prefix"] == rows[5]["VLM prefix"]
    per_step = [(rows[b][f"denoise ({b} DDIM)"][0] - rows[a][f"denoise ({a} DDIM)"][0]) / (b - a)
                for a, b in ((2, 4), (4, 5))]
    assert per_step[0] == per_step[1] > 0


def test_host_benchmark_times_every_host_step():
    out = _run("--host", "--repeats=3", "--warmup=1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    rows = re.findall(r"^(image (?:squash|official), (?:1 frame|4 in a row|4 in threads)|actions \+ trajectory)"
                      r"\s+([\d.]+)\s+([\d.]+)$", out.stdout, re.M)
    assert len(rows) == 7, out.stdout
    assert all(0 < float(med) <= float(p95) for _, med, p95 in rows), rows
