"""Several training processes: starting `jax.distributed`, and agreeing on a preemption signal.

One process per host (GPU nodes) or per TPU VM worker; on CPU (tests) collectives run over gloo.
"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np


def start(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
    """`jax.distributed.initialize` when launched with an explicit coordinator, or on a TPU pod / under SLURM
    (where JAX finds the processes itself); a no-op for a single plain process. Call before any JAX work."""
    explicit = coordinator_address is not None
    if not explicit and not any(v in os.environ for v in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID")):
        return
    if explicit:  # CPU processes exchange collectives over gloo (ignored by GPU and TPU backends)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


class Preemption:
    """Turns SIGTERM into a flag the training loop polls; with several processes, any one's flag stops all.
    Processes compare flags every `poll_every` steps (one tiny all-gather), so a step never waits on it."""

    def __init__(self, poll_every: int = 10):
        self.flag, self.poll_every = False, poll_every
        self._old = signal.signal(signal.SIGTERM, self._set)

    def _set(self, *_):
        self.flag = True

    def requested(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.flag
        if step % self.poll_every:
            return False
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.array(self.flag))))

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._old)
