"""vitra_jax.release: a run folder -> the release's files -> a run folder gives back the params, the policy
config and the statistics' means and stds; the release's HF layout is read; what the release cannot express is
refused and nothing is written."""

import numpy as np
import pytest

from tests.factories import tiny_config
from vitra_jax import release as release_cli
from vitra_jax import runs
from vitra_jax.weights import names


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


def test_round_trip_through_the_release_hf_layout(tmp_path):
    import json
    import shutil

    from vitra_jax.runs import read_run

    cfg, params, stats = _dit_t_run(tmp_path / "run")
    release_cli.main(["export", "--src", str(tmp_path / "run"), "--out", str(tmp_path / "off"),
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
    release_cli.main(["import", "--src", str(hub), "--config", "tiny", "--max_text_len", "40",
                  "--out", str(tmp_path / "back")])
    back = read_run(tmp_path / "back", need_tokenizer=False)
    assert back.cfg == cfg and back.step == 0
    a, b = names.flatten(params), names.flatten(back.params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], np.asarray(b[k])) for k in a)
    for name in ("action_mean", "action_std", "state_mean", "state_std"):
        np.testing.assert_array_equal(getattr(back.statistics, name), getattr(stats, name), err_msg=name)
    with pytest.raises(ValueError, match="kept no moving average"):
        read_run(tmp_path / "back", need_tokenizer=False, ema=True)


def test_what_the_release_cannot_express_is_refused_and_nothing_written(tmp_path):
    _dit_t_run(tmp_path / "run", qk_norm="rms")
    with pytest.raises(SystemExit, match="^vitra_jax.release: the release cannot express .*dit.qk_norm is 'rms'"):
        release_cli.main(["export", "--src", str(tmp_path / "run"), "--out", str(tmp_path / "off"), "--vlm_name", "x"])
    assert not (tmp_path / "off").exists()
    with pytest.raises(SystemExit, match="no official checkpoint at .*run/weights.pt"):
        release_cli.main(["import", "--src", str(tmp_path / "run"), "--out", str(tmp_path / "o2")])
    import torch

    torch.save({}, tmp_path / "run" / "weights.pt")
    with pytest.raises(SystemExit, match=r"run/config.json is not a release config.json"):
        release_cli.main(["import", "--src", str(tmp_path / "run" / "weights.pt"), "--out", str(tmp_path / "o2")])
    assert not (tmp_path / "o2").exists()
