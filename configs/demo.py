"""The README main job: a small VITRA policy (the tiny VLM, a width-256 DiT; 3.1M parameters) trained on the
procedural `demo_large` hand_vla dataset.

    make demo   # = python -m vitra_jax.train --config configs/demo.py --workdir out/demo
                #   then python -m vitra_jax.evaluate --workdir out/demo

Hardware: 2 CPU cores. Time: about 4 minutes (dataset build, tokenizer and statistics on first use, 1200
steps, evaluation). Expected: loss ~0.88 -> ~0.04; on the held-out `val` episodes the predicted wrist and finger
angles are closer to the truth at the chunk end than a hand that stays still (docs/benchmarks.md, "Demo").
The recipe differs from pretraining where a 3M-parameter model on a toy task needs it: 64 px images (the
target's colour must survive the resize), one learning rate 1e-3 with cosine decay, no backbone hold, fp32.
"""

from configs.base import base_config, recipe_args
from vitra_jax.data.config import data_config


def get_config(arg: str | None = None):
    recipe_args(arg, (), "configs/demo.py takes no argument")
    c = base_config()
    c.num_steps = 1200
    c.batch_size = 16
    c.model.variant = "demo"           # the tiny VLM with a width-256 DiT (width 64 never learns the fingers)
    c.model.image_size = 64
    c.model.dtype = "float32"
    c.model.remat_policy = "none"
    c.model.repeats = 2
    c.optim.update(backbone_lr=1e-3, action_lr=1e-3, backbone_freeze_steps=0, schedule="cosine",
                   end_lr_ratio=0.05, weight_decay=1e-4)
    c.mesh.update(data=-1, fsdp=1)
    c.checkpoint.update(every=400, keep_last=2, keep_every=0)
    c.log_every = 50
    c.val_every = 200
    c.val_batches = 2
    c.data = data_config(data_dir="out/data", demo_config="demo_large", tokenizer_vocab=512)
    c.lock()
    return c
