"""configs/finetune_xhand.py: the release's robot fine-tuning recipe, its command line, and a tiny fine-tune
from a vitra_jax checkpoint on TeleData episodes built by the hand_vla `teledata` source."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_flags

from configs import finetune_xhand
from tests.deploy.test_export import tiny_run
from tests.tfds_builders import teledata_synthetic as synth
from tests.tfds_builders.test_hand_vla import _build
from vitra_jax import runs, train
from vitra_jax.models import variants
from vitra_jax.weights import names, official

REPO = pathlib.Path(__file__).resolve().parents[2]
# The release's vitra/configs/robot_finetune.json (vitra_official.md §4) and its robot loss components.
RELEASE = {"total_batch_size": 256, "learning_rate": 1e-5, "action_model_learning_rate": 1e-5,
           "llm_freeze_step": 0, "optimizer_betas": (0.9, 0.95), "weight_decay": 0.1, "gradient_clip_val": 1.0,
           "repeated_diffusion_steps": 2, "loss_type": "robot", "state_mask_prob": 0.1}
ROBOT_WEIGHTS = {"wrist": 1.6, "fingers": 0.4}  # get_xhand_loss_components: 6D 1.6, joints 0.4


def test_recipe_is_the_release_robot_finetune(tmp_path):
    c = finetune_xhand.get_config("data=/data/tfds,init=/ckpt/run")
    assert c.batch_size == RELEASE["total_batch_size"] and c.grad_accum == 1
    assert (c.optim.backbone_lr, c.optim.action_lr) == (RELEASE["learning_rate"], RELEASE["action_model_learning_rate"])
    assert c.optim.backbone_freeze_steps == RELEASE["llm_freeze_step"] and c.optim.schedule == "constant"
    assert (c.optim.b1, c.optim.b2) == RELEASE["optimizer_betas"]
    assert (c.optim.weight_decay, c.optim.clip_norm) == (RELEASE["weight_decay"], RELEASE["gradient_clip_val"])
    assert c.data.augment and c.data.state_dropout == RELEASE["state_mask_prob"]
    assert list(c.data.components) == [
        {"name": "teledata", "kind": "hand_vla", "path": "/data/tfds/hand_vla/teledata", "weight": 1.0,
         "split": "train"}]
    assert c.init.checkpoint == "/ckpt/run" and not c.init.paligemma
    cfg = variants.from_config(c.model)
    assert cfg.loss_weights == ROBOT_WEIGHTS and cfg.repeats == RELEASE["repeated_diffusion_steps"]
    assert cfg.freeze_vision and cfg.dit.qk_norm == "timm_0_9_10"
    with c.unlocked():
        c.model.loss_type = "gripper"
    with pytest.raises(ValueError, match=r"model.loss_type must be one of \['human', 'robot'\], got 'gripper'"):
        variants.from_config(c.model)
    # What the release's own config would say of a model trained with it.
    release = official.official_config(cfg)
    assert release["loss_type"] == "robot" and release["repeated_diffusion_steps"] == 2

    with pytest.raises(ValueError, match=r"required but not set: data\.data_dir, data\.tokenizer, init\.checkpoint"):
        train.train(finetune_xhand.get_config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="takes 'data=DIR,init=RUN_DIR'"):
        finetune_xhand.get_config("frames=/x")


def test_required_fields_are_settable_on_the_command_line(monkeypatch):
    argv = ["train", f"--config={REPO}/configs/finetune_xhand.py", "--config.data.data_dir=/d",
            "--config.data.tokenizer=/t.model", "--config.init.checkpoint=/run"]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
    fv = flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", flag_values=fv)
    fv(argv)
    c = holder.value
    assert (c.data.data_dir, c.data.tokenizer, c.init.checkpoint) == ("/d", "/t.model", "/run")
    train.check_config(c, 1)


def _siglip(tree):
    return {k: v for k, v in names.flatten(tree).items() if k.startswith("vlm/img/") and "head" not in k}


def test_tiny_finetune_on_teledata_starts_from_the_checkpoint(tmp_path):
    init_dir = tiny_run(tmp_path / "init")
    init = runs.read_run(init_dir)
    raw, data = tmp_path / "raw", tmp_path / "tfds"
    written = [synth.write_teledata(raw, f"episode_{i}", n=24, seed=10 + i, untracked=[5 + i]) for i in range(3)]
    built = _build("teledata", data, raw)
    train_names = {ep["episode_metadata"]["video_name"].decode()
                   for ep in tfds.as_numpy(built.as_dataset(split="train"))}

    config = finetune_xhand.get_config(f"data={data},init={init_dir}")
    with config.unlocked():
        config.model.update(variant="tiny", dtype="float32", remat_policy="none")
        config.update(batch_size=8, num_steps=3, log_every=1, val_every=0)
        config.mesh.update(data=2, fsdp=-1, min_shard_size=256)
        config.checkpoint.update(every=3, keep_every=0)
        config.data.update(tokenizer=str(init.tokenizer), num_workers=0)
    # None of the three episodes hashes into `val` (val_fraction 0.02): validation is refused before any write.
    assert len(train_names) == 3
    with config.unlocked():
        config.val_every = 2
    with pytest.raises(ValueError, match="no data component has a 'val' split; set val_every=0"):
        train.train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the workdir is made
    with config.unlocked():
        config.val_every = 0
    result = train.train(config, tmp_path / "run")

    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    assert log[0]["lr_backbone"] == pytest.approx(1e-5) and log[0]["lr_action"] == pytest.approx(1e-5)

    # Started from the checkpoint: frozen SigLIP is the init run's bit for bit; the head moved from it.
    final = jax.device_get(result["state"].params)
    start, end = _siglip(init.params), _siglip(final)
    assert start and all(np.array_equal(end[k], start[k]) for k in start)
    flat_init, flat_final = names.flatten(init.params), names.flatten(final)
    assert not np.array_equal(flat_final["action_model/final_linear/kernel"], flat_init["action_model/final_linear/kernel"])

    # The run records the robot weights, and its statistics are the robot data's: the right wrist position's
    # mean over tracked frames of the train episodes (flipped frames only feed the left hand's statistics).
    run = runs.read_run(tmp_path / "run")
    assert run.cfg.loss_weights == ROBOT_WEIGHTS and run.cfg.repeats == 2
    names_sorted = [f"episode_{i}" for i in range(3)]
    positions = np.concatenate([w.pose["right"][w.tracked["right"], :3] for n, w in zip(names_sorted, written)
                                if n in train_names])
    np.testing.assert_allclose(run.statistics.state_mean[51:54], positions.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(run.statistics.state_mean[0], -positions[:, 0].mean(), atol=1e-5)
