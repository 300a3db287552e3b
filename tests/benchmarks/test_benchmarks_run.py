"""The benchmarks still run end to end at toy sizes and print their tables (their figures are measured
elsewhere, with the commands in docs/benchmarks.md)."""

import os
import pathlib
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*args: str) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out.stdout


def test_data_benchmark_prints_its_table(tmp_path):
    out = _run("vitra_jax.benchmarks.data", "--samples=32", "--batch=8", "--episodes=4", "--rss_samples=0",
               f"--out={tmp_path}")
    rates = re.findall(r"^(grain|tf\.data)[^\n]*?\s([\d.]+)\s+([\d.]+)$", out, re.M)
    assert len(rates) >= 3 and all(float(r[1]) > 0 for r in rates), out
    assert re.search(r"bytes read per sample: [\d.]+ KiB", out), out


def test_train_step_benchmark_compiles_and_times_the_trainers_step():
    """The compile table, then the timing path a GPU takes by default, forced on CPU with --time."""
    out = _run("vitra_jax.benchmarks.train_step", "--variant=tiny", "--batch=16", "--mesh=2,4", "--steps=2",
               "--time")
    assert "all-gather" in out and re.search(r"\d\.\d+e\+\d+", out), out
    step_ms = float(re.search(r"step time \(median\)\s+\|\s+([\d.]+) ms", out).group(1))
    examples = float(re.search(r"examples/s\s+\|\s+([\d.]+)", out).group(1))
    assert step_ms > 0 and abs(examples - 16 / (step_ms / 1e3)) <= 0.01 * examples, out
    assert re.search(r"loss after the timed steps\s+\|\s+\d+\.\d+", out), out
