"""Tiny end-to-end recipe for tests and debugging: the `tiny` policy on the procedural demo dataset, CPU.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m vitra_jax.train --config configs/debug.py \
        --workdir /tmp/debug --config.data.data_dir=/tmp/debug_data

Hardware: any CPU, as 8 XLA devices (mesh data 2 x fsdp 4; on fewer devices set --config.mesh.data=1).
Time: ~1 min including compilation and the one-time demo dataset build. Expected: losses near 1.0 over the
6 steps (too few to fall; tests/e2e/test_train.py trains it 40 steps, where the last 10 average < 0.9× the
first 10). Every test of the trainer starts from this recipe.
"""

from configs.base import base_config, recipe_args
from vitra_jax.data.config import data_config


def get_config(arg: str | None = None):
    recipe_args(arg, (), "configs/debug.py takes no argument")
    c = base_config()
    c.num_steps = 6
    c.batch_size = 16
    c.model.variant = "tiny"
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.model.repeats = 2
    c.optim.update(backbone_lr=1e-3, action_lr=1e-3, backbone_freeze_steps=2, weight_decay=1e-4)
    c.mesh.update(data=2, fsdp=-1, min_shard_size=256)  # small threshold so the tiny model is really sharded
    c.checkpoint.update(every=3, keep_last=10, keep_every=0)
    c.log_every = 1
    c.val_every = 3
    c.val_batches = 1
    c.data = data_config(data_dir="out/debug_data", tokenizer_vocab=512)
    c.lock()
    return c
