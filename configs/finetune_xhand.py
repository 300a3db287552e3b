"""Fine-tuning VITRA on XHand teleoperation (VITRA-TeleData), the release's second recipe.

    tfds build tfds_builders/hand_vla --config=teledata --manual_dir=/data/TeleData --data_dir=/data/tfds \
        --file_format=array_record
    python -m vitra_jax.release import --src /ckpt/VITRA-VLA-3B --out /ckpt/vitra3b_run
    python -m vitra_jax.train --workdir /runs/xhand \
        --config=configs/finetune_xhand.py:data=/data/tfds,init=/ckpt/vitra3b_run \
        --config.data.tokenizer=/ckpt/paligemma2-3b-mix-224/tokenizer.model

`data` is the `--data_dir` of the TFDS build (the builder's `teledata` source reads the release's `.h5` + `.mp4`
episodes as hand episodes, tfds_builders/hand_vla/teledata.py); frame stores and statistics are made once under
it. `init` is a run folder holding the VITRA checkpoint to start from (`python -m vitra_jax.release import` for the released
VITRA-VLA-3B, or any vitra_jax pretraining run).

Recipe (release `robot_finetune.json`, vitra_official.md §4): global batch 256; AdamW (0.9, 0.95), weight decay
0.1 on matrices and the cognition token; gradient clip 1.0; lr 1e-5 for PaliGemma-2 except SigLIP and 1e-5 for
the DiT, FoV encoder and cognition token, both constant from step 0; SigLIP frozen; 2 noise draws per VLM pass;
robot loss weights (wrist 1.6, fingers 0.4); bf16 VLM, fp32 DiT with the release's q/k norm; augmentation as in
pretraining (flips included), hand states dropped with p 0.1; statistics of the robot data.
Hardware: 8×H100 80GB (one host) or a TPU v5p-16 slice. The release caps steps at 2M and saves every 5000 without
publishing a length; `num_steps` here is 20,000 (5.1M samples). Time: 1.080e15 model FLOPs per step (analytic,
`vitra_jax.metrics`; half a pretraining step's 2.189e15), so about 0.34 s per step and 1.9 h in all on 8×H100 at
the 40 % MFU goal (an estimate, not a measurement). Expected loss: the release publishes none; the first logged
values are the pretrained model's loss on robot chunks.
"""

from ml_collections import config_dict

from configs.base import base_config, recipe_args
from vitra_jax.data.config import component, data_config


def get_config(arg: str | None = None):
    args = recipe_args(arg, ("data", "init"), "configs/finetune_xhand.py takes 'data=DIR,init=RUN_DIR'")
    c = base_config()
    c.num_steps = 20_000
    c.batch_size = 256
    c.model.variant = "3b"
    c.model.qk_norm = "timm_0_9_10"
    c.model.repeats = 2
    c.model.loss_type = "robot"
    c.optim.update(backbone_lr=1e-5, action_lr=1e-5, backbone_freeze_steps=0, b1=0.9, b2=0.95)
    c.mesh.update(data=-1, fsdp=8)
    # required: fine-tuning starts from a VITRA checkpoint
    c.init.checkpoint = args.get("init") or config_dict.placeholder(str)
    data = args.get("data")
    components = [component("teledata", f"{data}/hand_vla/teledata")] if data else []
    c.data = data_config(data_dir=data, components=components, build_demo=False, tokenizer=None,
                         augment=True, num_workers=16)
    c.lock()
    return c
