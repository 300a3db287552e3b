"""configs/pretrain.py against the release's recipe (vitra_official.md §4, numbers written out here) and its
command-line argument: the VITRA-1M mix from one frame store per sub-dataset, OXE by name."""

import pytest

from configs import pretrain

# The release's magic_mix (vitra/datasets/data_mixture.py) and octo's magic-soup weights of two datasets.
MAGIC_MIX = {"ego4d_cooking_and_cleaning": 1.0, "egoexo4d": 3.0, "epic": 1.0, "ssv2": 5.0, "ego4d_other": 0.5}
OCTO = {"bridge_dataset": 1.0, "fractal20220817_data": 0.54087122203}


def test_pretrain_is_the_release_recipe():
    c = pretrain.get_config("frames=/data/frames")
    assert c.batch_size == 512 and c.model.repeats == 8 and c.model.qk_norm == "timm_0_9_10"
    o = c.optim
    assert (o.backbone_lr, o.action_lr, o.backbone_freeze_steps, o.schedule) == (1e-5, 1e-4, 5000, "constant")
    assert (o.weight_decay, o.clip_norm, o.b1, o.b2) == (0.1, 1.0, 0.9, 0.999)
    assert c.model.freeze_vision and c.init.cognition_from_embedding
    got = {d["name"]: (d["path"], d["weight"], d["kind"]) for d in c.data.components}
    assert got == {n: (f"/data/frames/{n}", w, "hand_vla") for n, w in MAGIC_MIX.items()}


def test_oxe_components_by_name():
    c = pretrain.get_config("frames=/f,oxe=/o,oxe_names=bridge_dataset+fractal20220817_data")
    oxe = {d["name"]: (d["path"], d["weight"]) for d in c.data.components if d["kind"] == "oxe"}
    assert oxe == {n: (f"/o/{n}", pytest.approx(w)) for n, w in OCTO.items()}
    assert len(pretrain.get_config("frames=/f,oxe=/o").data.components) == len(MAGIC_MIX) + 25
    with pytest.raises(KeyError, match="unknown OXE dataset 'bridge'"):
        pretrain.get_config("frames=/f,oxe=/o,oxe_names=bridge")
    with pytest.raises(ValueError, match="oxe_names needs oxe=DIR"):
        pretrain.get_config("frames=/f,oxe_names=bridge_dataset")


def test_recipes_without_arguments_refuse_one():
    from configs import debug, demo

    for module, name in ((debug, "debug"), (demo, "demo")):
        with pytest.raises(ValueError, match=f"configs/{name}.py takes no argument, got 'frames=/x'"):
            module.get_config("frames=/x")
