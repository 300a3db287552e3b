"""Kill -9 and resume: a run killed after a checkpoint and resumed equals a run that never stopped, bit for bit
(losses, params, and so the data-iterator position), on 8 fake CPU devices with configs/debug.py."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np

from tests.e2e.conftest import debug_config

REPO = pathlib.Path(__file__).resolve().parents[2]


def _launch(workdir, data_dir, num_steps: int, **flags) -> subprocess.Popen:
    args = [sys.executable, "-m", "vitra_jax.train", "--config", str(REPO / "configs" / "debug.py"),
            "--workdir", str(workdir), f"--config.num_steps={num_steps}", f"--config.data.data_dir={data_dir}",
            "--config.val_every=0", "--config.checkpoint.every=3"]
    args += [f"--config.{k}={v}" for k, v in flags.items()]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _losses(workdir) -> dict[int, float]:
    """Loss per step; a step logged twice (before a kill and after the resume) keeps its last value."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def _params(workdir):
    from vitra_jax import checkpoint
    from vitra_jax.models import policy as policy_lib

    cfg = policy_lib.policy_config("tiny")
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            jax.eval_shape(policy_lib.VitraPolicy(cfg).init, jax.random.PRNGKey(0)))
    return jax.device_get(checkpoint.restore_params(workdir, abstract))


def test_kill_minus_9_then_resume_is_bit_exact(tmp_path, debug_data_dir):
    debug_config(debug_data_dir)  # the recipe loads
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    # A long run (constant learning rates: its first steps equal a short run's), killed once step 3 is on disk.
    proc = _launch(killed, debug_data_dir, 1000)
    deadline = time.time() + 600
    while not (killed / "checkpoints" / "3").is_dir():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() < deadline, "no checkpoint at step 3 within 10 minutes"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
    last = saved[-1]
    assert last % 3 == 0 and last < 1000

    out = _finish(_launch(killed, debug_data_dir, last + 3))
    assert f"resumed from the checkpoint at step {last}" in out
    _finish(_launch(straight, debug_data_dir, last + 3))

    resumed, reference = _losses(killed), _losses(straight)
    for step in range(last + 1, last + 4):
        assert resumed[step] == reference[step], (step, resumed[step], reference[step])
    a, b = _params(killed), _params(straight)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.array_equal(x, y)
    before = _params(killed / "checkpoints" / str(last))  # training really went on after the resume
    assert not np.array_equal(before["action_model"]["final_linear"]["kernel"],
                              a["action_model"]["final_linear"]["kernel"])


def test_sigterm_saves_the_current_step_and_stops(tmp_path, debug_data_dir):
    import threading

    from vitra_jax import train

    config = debug_config(debug_data_dir, num_steps=1000, val_every=1, **{"checkpoint.every": 500})
    log = tmp_path / "run" / "metrics.jsonl"

    def preempt():  # as a cluster scheduler would, once training is under way
        while not (log.exists() and len(log.read_text().splitlines()) >= 2):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    result = train.train(config, tmp_path / "run")
    last = result["final_step"]
    assert 2 <= last < 500 and result["preempted"]  # stopped early, before any periodic checkpoint was due
    saved = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").glob("[0-9]*"))
    assert saved == [last]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert rows[-1]["step"] == last and "val_loss" not in rows[-1]  # no validation once preempted
    assert all("val_loss" in r for r in rows[:-1])
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back
