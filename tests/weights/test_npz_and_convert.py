"""big_vision npz import (bf16 as void2), our checkpoint format, and the convert CLI."""

import numpy as np
import pytest
import ml_dtypes

from tests.factories import save_tiny_hf, tiny_config
from vitra_jax import runs
from vitra_jax.weights import convert, hf, names, npz


@pytest.fixture(scope="module")
def tiny_params():
    import jax
    import jax.numpy as jnp

    from vitra_jax.models.paligemma import PaliGemma

    cfg = tiny_config()
    s = cfg.image_size
    p = PaliGemma(cfg).init(jax.random.key(0), jnp.zeros((1, s, s, 3)), jnp.zeros((1, 2), jnp.int32),
                            jnp.ones((1, 2), bool))["params"]
    return cfg, jax.tree.map(np.asarray, p)


def write_bigvision(path, flat):
    """As big_vision ships them: `params/` prefix, bf16 stored as void2."""
    np.savez(path, **{f"params/{k}": v.astype(ml_dtypes.bfloat16).view("V2") for k, v in flat.items()})


def test_bigvision_npz_bf16_void(tiny_params, tmp_path):
    cfg, params = tiny_params
    flat = names.flatten(params)
    write_bigvision(tmp_path / "pg.npz", flat)
    assert np.load(tmp_path / "pg.npz")["params/llm/final_norm/scale"].dtype == np.dtype("V2")
    loaded = names.flatten(npz.load_bigvision_npz(tmp_path / "pg.npz", cfg))
    for k, v in flat.items():
        assert loaded[k].dtype == np.float32
        np.testing.assert_array_equal(loaded[k], v.astype(ml_dtypes.bfloat16).astype(np.float32))
    del flat["img/head/bias"]
    write_bigvision(tmp_path / "bad.npz", flat)
    with pytest.raises(KeyError, match="img/head/bias"):
        npz.load_bigvision_npz(tmp_path / "bad.npz", cfg)


def test_convert_cli_hf_round_trip_and_no_partial_output(tmp_path):
    src = save_tiny_hf(tmp_path / "hf")
    convert.main(["--from", "hf", "--src", str(src), "--out", str(tmp_path / "ours")])
    cfg, params = npz.load_checkpoint(tmp_path / "ours")
    assert cfg == hf.load_hf_paligemma(src)[0]
    convert.main(["--to", "hf", "--src", str(tmp_path / "ours"), "--out", str(tmp_path / "back")])
    a, b = hf.read_safetensors(src), hf.read_safetensors(tmp_path / "back")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="img/Transformer/encoder_norm/bias"):  # tiny shapes vs 3b
        convert.main(["--from", "bigvision", "--src", str(tmp_path / "ours" / "params.npz"),
                      "--config", "3b-224", "--out", str(tmp_path / "fail")])
    assert not (tmp_path / "fail").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "hf", "ours"]


def _dit_t_run(root, qk_norm="timm_0_9_10"):
    """A run folder of the tiny VLM with the release's DiT-T preset (the smallest policy the release can
    describe), random weights, statistics and no tokenizer."""
    import dataclasses

    import jax

    from vitra_jax.data.statistics import DatasetStatistics
    from vitra_jax.models.dit import DiTConfig
    from vitra_jax.models.policy import PolicyConfig, VitraPolicy

    cfg = PolicyConfig(vlm=tiny_config(), dit=DiTConfig(depth=3, width=256, num_heads=4, token_size=48,
                                                         qk_norm=qk_norm), repeats=2, max_text_len=40)
    shapes = jax.eval_shape(VitraPolicy(cfg).init, jax.random.key(0))
    rng = np.random.default_rng(5)
    params = names.unflatten({k: rng.normal(size=v.shape).astype(np.float32)
                              for k, v in names.flatten(shapes).items()})
    stats = DatasetStatistics(**{f"{k}_{f}": rng.normal(size=102) for k in ("action", "state")
                                 for f in ("mean", "q01", "q99")},
                              action_std=rng.uniform(0.1, 1, 102), state_std=rng.uniform(0.1, 1, 102),
                              num_frames=50, num_episodes=2)
    runs.write_run_folder(root, params, config={"data": {"tokenizer": ""}}, statistics=stats, policy_config=cfg,
                             step=3)
    return dataclasses.replace(cfg, vlm=dataclasses.replace(cfg.vlm)), params, stats


def test_convert_cli_official_round_trip_through_the_release_layout(tmp_path):
    import json
    import shutil

    from vitra_jax.runs import read_run

    cfg, params, stats = _dit_t_run(tmp_path / "run")
    convert.main(["--to", "official", "--src", str(tmp_path / "run"), "--out", str(tmp_path / "off"),
                  "--vlm_name", "/models/tiny-paligemma"])
    assert sorted(p.name for p in (tmp_path / "off").iterdir()) == ["config.json", "dataset_statistics.json",
                                                                   "weights.pt"]
    release = json.loads((tmp_path / "off" / "config.json").read_text())
    assert release["action_model"] == {"model_type": "DiT-T", "token_size": 48, "action_dim": 192,
                                       "hidden_size": 256}
    assert release["vlm"]["pretrained_model_name_or_path"] == "/models/tiny-paligemma"
    assert (release["fwd_pred_next_n"], release["repeated_diffusion_steps"], release["use_state"]) == (16, 2, "DiT")
    # the release's HF repository layout: checkpoints/*.pt, configs/config.json, statistics/*.json
    hub = tmp_path / "hub"
    for src, dst in (("weights.pt", "checkpoints/weights.pt"), ("config.json", "configs/config.json"),
                     ("dataset_statistics.json", "statistics/dataset_statistics.json")):
        (hub / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "off" / src, hub / dst)
    convert.main(["--from", "official", "--src", str(hub), "--config", "tiny", "--max_text_len", "40",
                  "--out", str(tmp_path / "back")])
    back = read_run(tmp_path / "back", need_tokenizer=False)
    assert back.cfg == cfg and back.step == 0
    a, b = names.flatten(params), names.flatten(back.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], np.asarray(b[k])) for k in a)
    for name in ("action_mean", "action_std", "state_mean", "state_std"):
        np.testing.assert_array_equal(getattr(back.statistics, name), getattr(stats, name), err_msg=name)
    with pytest.raises(ValueError, match="kept no moving average"):
        read_run(tmp_path / "back", need_tokenizer=False, ema=True)


def test_convert_to_official_refuses_an_rms_run_and_writes_nothing(tmp_path):
    _dit_t_run(tmp_path / "run", qk_norm="rms")
    with pytest.raises(SystemExit, match="^vitra_jax.weights.convert: the release cannot express .*dit.qk_norm is 'rms'"):
        convert.main(["--to", "official", "--src", str(tmp_path / "run"), "--out", str(tmp_path / "off"),
                      "--vlm_name", "x"])
    assert not (tmp_path / "off").exists()
    with pytest.raises(SystemExit, match="no official checkpoint at .*run/weights.pt"):
        convert.main(["--from", "official", "--src", str(tmp_path / "run"), "--out", str(tmp_path / "o2")])
    import torch

    torch.save({}, tmp_path / "run" / "weights.pt")
    with pytest.raises(SystemExit, match=r"run/config.json is not a release config.json"):
        convert.main(["--from", "official", "--src", str(tmp_path / "run" / "weights.pt"), "--out",
                      str(tmp_path / "o2")])
    assert not (tmp_path / "o2").exists()
