"""The trainer on 8 fake CPU devices with configs/debug.py: it learns, shards as declared, and trains the
projector while SigLIP stays bit-identical."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from tests.e2e.conftest import debug_config
from vitra_jax import train


def _flat(tree):
    return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): x
            for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_debug_run_learns_sharded_and_freezes_siglip(tmp_path, debug_data_dir, capsys):
    assert jax.device_count() == 8
    config = debug_config(debug_data_dir, num_steps=40, **{"checkpoint.every": 40, "val_every": 20,
                                                            "log_every": 10})
    run = train.create(config)
    assert dict(run.mesh.shape) == {"data": 2, "fsdp": 4}
    init = jax.device_get(train.init_state(run.policy, run.tx, config, run.shardings).params)
    result = train.train(config, tmp_path / "run")
    state = result["state"]

    assert not result["preempted"]
    losses = np.array([result["losses"][s] for s in range(1, 41)])
    assert losses[-10:].mean() < 0.9 * losses[:10].mean(), losses

    # Every array carries the sharding the trainer declared, and large kernels really are split over fsdp.
    for name, arr in _flat(state).items():
        want = _flat(run.shardings)[name]
        assert arr.sharding.is_equivalent_to(want, arr.ndim), name
    params = _flat(state.params)
    mlp = params["vlm/llm/layers/mlp/gating_einsum"]  # (layers, 2, width 48, mlp 96): mlp dim split over 4
    assert mlp.sharding.spec == P(None, None, None, "fsdp")
    assert mlp.addressable_shards[0].data.shape == (2, 2, 48, 24)
    sharded = [n for n, a in params.items() if any(ax is not None for ax in a.sharding.spec)]
    assert len(sharded) >= 10, sharded
    mu = _flat(state.opt_state)
    mu_mlp = [a for n, a in mu.items() if n.endswith("vlm/llm/layers/mlp/gating_einsum")]
    assert mu_mlp and all(a.sharding.spec == mlp.sharding.spec for a in mu_mlp)

    # SigLIP frozen bit-for-bit; the projector, Gemma, the DiT and the cognition token train.
    final, start = _flat(jax.device_get(state.params)), _flat(init)
    for name in final:
        same = np.array_equal(final[name], start[name])
        if name.startswith("vlm/img/") and not name.startswith("vlm/img/head"):
            assert same, name
    for name in ("vlm/img/head/kernel", "vlm/llm/layers/mlp/gating_einsum", "cognition_token",
                 "action_model/final_linear/kernel"):
        assert not np.array_equal(final[name], start[name]), name

    log = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 40 and '"val_loss"' in log[19] and '"lr_backbone": 0.0' in log[0]
    assert (tmp_path / "run" / "checkpoints" / "40").is_dir()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))

    # The same workdir with another model shape is refused before anything in it changes.
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*"))
    other = debug_config(debug_data_dir, num_steps=41, **{"model.image_size": 64})
    with pytest.raises(ValueError, match=r"holds a checkpoint of another model or optimizer \(step 40\): .*pos_embedding"):
        train.train(other, tmp_path / "run")
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*")) == before
    # ... and so is one whose train state has other entries (EMA switched on)
    settings = {"checkpoint.every": 40, "val_every": 20, "log_every": 5}
    other = debug_config(debug_data_dir, num_steps=41, **settings, **{"optim.ema_decay": 0.99})
    with pytest.raises(ValueError, match=r"another model or optimizer \(step 40\): missing \.ema_params"):
        train.train(other, tmp_path / "run")
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "run").rglob("*")) == before
    # Settings that keep the state's layout may change; the resumed run names them.
    capsys.readouterr()
    train.train(debug_config(debug_data_dir, num_steps=41, **settings), tmp_path / "run")
    assert "resuming with changed settings: log_every: 10 -> 5; num_steps: 40 -> 41" in capsys.readouterr().out


def test_a_run_normalized_by_embodiment_exports_a_robots_statistics(tmp_path, debug_data_dir, fixtures_dir):
    """Demo hand data mixed with Bridge, each normalized by its own statistics: the run keeps every group's,
    and export --statistics_group bridge_dataset writes Bridge's into the bundle (the numbers a Bridge-only
    pipeline normalizes with). Validation also reports each component's loss alone, the loss a pipeline of
    that component alone gives with the saved params."""
    from vitra_jax import export, runs
    from vitra_jax.data import loader
    from vitra_jax.data.config import component
    from vitra_jax.data.statistics import DatasetStatistics

    comps = [component("demo", str(debug_data_dir / "frames" / "demo")),
             component("bridge_dataset", str(fixtures_dir / "oxe" / "bridge_dataset"), 0.5, kind="oxe")]
    config = debug_config(debug_data_dir, num_steps=2, val_every=2, val_by_component=True, **{
        "checkpoint.every": 2, "data.components": comps, "data.normalize_by": "embodiment"})
    workdir = tmp_path / "run"
    train.train(config, workdir)

    def pipeline_of(c):
        cfg = debug_config(debug_data_dir, **{"data.components": [c]}).data
        return loader.make_pipeline(cfg, image_size=32, max_text_len=48)

    def alone(c):
        return pipeline_of(c).statistics

    def same(a: DatasetStatistics, b: DatasetStatistics):
        for f in dataclasses.fields(DatasetStatistics):
            np.testing.assert_array_equal(getattr(a, f.name), getattr(b, f.name), f.name)

    bridge, demo = alone(comps[1]), alone(comps[0])
    assert not np.allclose(bridge.action_std, demo.action_std)
    same(DatasetStatistics.load(workdir / "statistics.json"), demo)  # the run's own: the hand data's
    same(DatasetStatistics.load(workdir / "statistics" / "bridge_dataset.json"), bridge)
    same(runs.read_run(workdir, statistics="bridge_dataset").statistics, bridge)
    with pytest.raises(runs.RunFolderError, match=r"no statistics named 'kuka' \(it has \['bridge_dataset', "
                                                  r"'hand_vla'\]\)"):
        runs.read_run(workdir, statistics="kuka")
    assert sorted(p.name for p in (workdir / "statistics").iterdir()) == ["bridge_dataset.json", "hand_vla.json"]
    assert "--statistics_group with one of ['hand_vla', 'bridge_dataset']" in runs.statistics_note(
        runs.read_run(workdir))
    # the same workdir under the release's one-set rule would train on targets normalized otherwise: refused
    with pytest.raises(ValueError, match=r"data.normalize_by: 'embodiment' -> 'mixture'"):
        train.train(debug_config(debug_data_dir, num_steps=3, val_every=0, **{
            "data.components": comps, "data.normalize_by": "mixture"}), workdir)
    export.main(["--workdir", str(workdir), "--out", str(tmp_path / "bundle"), "--statistics_group", "bridge_dataset"])
    same(DatasetStatistics.load(tmp_path / "bundle" / "dataset_statistics.json"), bridge)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["source"]["statistics"] == "bridge_dataset"

    from vitra_jax import checkpoint

    policy = train.create(config).policy
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            jax.eval_shape(policy.init, jax.random.PRNGKey(0)))
    params = checkpoint.restore_params(workdir, abstract)
    logged = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[1])
    assert {"val_loss", "val_loss/demo", "val_loss/bridge_dataset"} <= set(logged)
    for c in comps:  # a small split gives no more batches than it fills
        pipe = pipeline_of(c)
        count = min(config.val_batches, math.ceil(pipe.val_sources[0].store.num_frames / config.batch_size))
        batches = pipe.val_batches(config.batch_size, count)
        want = np.mean([float(policy.loss(params, b, jax.random.PRNGKey(1))[0]) for b in batches])
        assert logged[f"val_loss/{c['name']}"] == pytest.approx(want, rel=1e-5), c["name"]

    # Evaluation: figures per component, which make up the overall ones; pictures of hand data only.
    from vitra_jax import evaluate

    figures = evaluate.evaluate(workdir, pictures=(0,), num_samples=1, frames_per_component=40)
    parts = figures["by_component"]
    assert set(parts) == {"demo", "bridge_dataset"}
    n = {name: parts[name]["evaluated_hands"] for name in parts}
    assert figures["evaluated_hands"] == sum(n.values())
    assert figures["policy_error_m"] == pytest.approx(
        sum(n[k] * parts[k]["policy_error_m"] for k in parts) / sum(n.values()), rel=1e-9)
    bridge_val = pipeline_of(comps[1]).val_sources[0].store
    assert bridge_val.num_frames > 40 and n["bridge_dataset"] == 40  # one arm per frame, each first step valid
    # a robot has a gripper (dim 57, in Bridge's own units), not 45 finger angles: for the baseline, the gripper's
    # change from the observed state to the chunk's last valid step; finger figures are the hand data's alone
    from vitra_jax.handspace import trajectory

    changes = []
    for smp in pipeline_of(comps[1]).samples("val", per_component=40):
        last = np.flatnonzero(smp["action_mask"][:, 57])[-1] + 1
        end = trajectory.integrate_actions(smp["state"], smp["actions"])[last, 57]
        if smp["state_mask"][57]:
            changes.append(abs(end - smp["state"][57]))
    assert changes and parts["bridge_dataset"]["still_gripper_error"] == pytest.approx(np.mean(changes))
    assert parts["bridge_dataset"]["policy_finger_error_deg"] is None
    assert figures["policy_finger_error_deg"] == parts["demo"]["policy_finger_error_deg"]
    assert "bridge_dataset (" in evaluate.report(figures)
    demo_val = pipeline_of(comps[0]).val_sources[0].store
    assert sorted(p.name for p in workdir.glob("prediction_*.png")) == [
        f"prediction_ep{e}_t00.png" for e in range(demo_val.num_episodes)]
