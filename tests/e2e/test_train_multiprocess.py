"""Multi-host: the debug run as 2 processes x 4 CPU devices (jax.distributed over 127.0.0.1, gloo collectives)
gives the losses of 1 process x 8 devices, and the checkpoint holds each process's data position."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests.e2e.test_train_resume import REPO, _finish, _launch, _losses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, debug_data_dir):
    steps = 4
    single = tmp_path / "single"
    _finish(_launch(single, debug_data_dir, steps))

    multi = tmp_path / "multi"
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    procs = []
    for pid in range(2):
        args = [sys.executable, "-m", "vitra_jax.train", "--config", str(REPO / "configs" / "debug.py"),
                "--workdir", str(multi), f"--config.num_steps={steps}",
                f"--config.data.data_dir={debug_data_dir}", "--config.val_every=0", "--config.checkpoint.every=3",
                f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={pid}"]
        procs.append(subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for p in procs:
        _finish(p)

    a, b = _losses(single), _losses(multi)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=1e-6)
    data_states = sorted(p.name for p in (multi / "checkpoints" / str(steps) / "data").glob("process_*"))
    assert data_states == ["process_0-of-2.json", "process_1-of-2.json"]  # one iterator position per process
    assert json.loads((multi / "config.json").read_text())["batch_size"] == 16
