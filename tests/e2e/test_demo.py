"""The README main job, run as `make demo` runs it (the trainer's and the evaluator's command lines on one CPU
device, at configs/demo.py's fixed seed): the loss falls clearly (windows of 100 steps 3 standard errors apart)
and the policy beats a hand that stays still on the held-out episodes by a clear margin, for the wrist and for
the finger angles."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run(*args: str) -> None:
    # The test session's 8 fake devices would shard the demo 8 ways; `make demo` runs on one device.
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_demo_trains_and_beats_the_still_hand(tmp_path):
    run = tmp_path / "run"
    _run("vitra_jax.train", "--config", str(REPO / "configs" / "demo.py"), "--workdir", str(run),
         f"--config.data.data_dir={tmp_path / 'data'}")  # the whole README recipe (1200 steps)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = np.array([r["loss"] for r in sorted(rows, key=lambda r: r["step"])])
    assert len(losses) == 1200
    first, last = losses[:100], losses[-100:]
    sem = lambda x: x.std() / np.sqrt(len(x))  # noqa: E731
    assert last.mean() + 3 * sem(last) < first.mean() - 3 * sem(first), (first.mean(), last.mean())

    _run("vitra_jax.evaluate", "--workdir", str(run))
    figures = json.loads((run / "evaluation.json").read_text())
    assert figures["pictures"] == 9  # 3 held-out episodes x frames 0, 4, 8
    assert figures["evaluated_hands"] == 138  # every valid hand of every held-out frame
    assert figures["policy_error_m"] < 0.8 * figures["still_error_m"], figures
    assert figures["policy_finger_error_deg"] < 0.6 * figures["still_finger_error_deg"], figures
    assert (run / "loss.png").stat().st_size > 0
    assert len(list(run.glob("prediction_ep*_t*.png"))) == 9
