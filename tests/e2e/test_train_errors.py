"""Bad input to the trainer ends in one clear error, and nothing already written is lost."""

import dataclasses
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import pretrain
from tests import factories
from tests.e2e.conftest import debug_config
from vitra_jax import train
from vitra_jax.data import statistics

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_required_fields_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"required but not set: data\.data_dir, data\.tokenizer, init\.paligemma"):
        train.train(pretrain.get_config(), tmp_path)
    assert not any(tmp_path.iterdir())


def test_unknown_override_suggests_the_field(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vitra_jax.train", "--config", "configs/debug.py", "--workdir",
                          str(tmp_path), "--config.batch_sizee=8"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("vitra_jax.train: unknown config field 'batch_sizee' Did you mean "
                                                   '"batch_size" instead of "batch_sizee"?')
    assert not any(tmp_path.iterdir())


def test_missing_statistics_say_how_to_compute_them(tmp_path, debug_data_dir):
    config = debug_config(debug_data_dir, **{"data.statistics": str(tmp_path / "none.json"),
                                             "data.compute_statistics": False})
    with pytest.raises(statistics.MissingStatisticsError, match="statistics"):
        train.train(config, tmp_path / "run")


def test_nan_loss_stops_before_saving(tmp_path, debug_data_dir):
    config = debug_config(debug_data_dir, num_steps=6, val_every=0,
                          **{"optim.action_lr": 1e30, "optim.backbone_lr": 1e30,
                             "optim.backbone_freeze_steps": 0, "optim.clip_norm": 0.0})
    with pytest.raises(FloatingPointError, match=r"(loss|grad_norm) is (nan|inf) at step (\d)") as err:
        train.train(config, tmp_path / "run")
    bad_step = int(str(err.value).split("at step ")[1].split(";")[0])
    saved = [int(p.name) for p in (tmp_path / "run" / "checkpoints").glob("[0-9]*")]
    assert all(s < bad_step for s in saved), (saved, bad_step)


def test_paligemma_weights_load_and_a_mismatch_is_refused(tmp_path, debug_data_dir):

    hf_dir = factories.save_tiny_hf(tmp_path / "hf", seed=3)
    config = debug_config(debug_data_dir, **{"init.paligemma": str(hf_dir)})
    run = train.create(config)
    state = train.init_state(run.policy, run.tx, config, run.shardings)
    params = jax.device_get(state.params)
    from safetensors.numpy import load_file

    tensors = load_file(str(next(hf_dir.glob("*.safetensors"))))
    embed = next(v for k, v in tensors.items() if k.endswith("embed_tokens.weight"))
    np.testing.assert_array_equal(params["vlm"]["llm"]["embedder"]["input_embedding"], embed)
    np.testing.assert_array_equal(params["cognition_token"], embed[10])  # the release's cognition init
    patch = next(v for k, v in tensors.items() if k.endswith("patch_embedding.weight"))  # (out, in, kh, kw)
    np.testing.assert_array_equal(params["vlm"]["img"]["embedding"]["kernel"], patch.transpose(2, 3, 1, 0))

    tiny = factories.tiny_config()
    wide = dataclasses.replace(tiny, llm=dataclasses.replace(tiny.llm, mlp_dim=128))
    wrong = tmp_path / "hf_wide"
    factories.tiny_hf_model(wide).save_pretrained(str(wrong))
    config = debug_config(debug_data_dir, **{"init.paligemma": str(wrong)})
    run = train.create(config)
    with pytest.raises(ValueError, match=r"do not fit the configured model.*expected \[2, 2, 48, 96\]"):
        train.init_state(run.policy, run.tx, config, run.shardings)
