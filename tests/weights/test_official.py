"""Official VITRA checkpoint layout: key set and shapes of §9.2, exact 192/212 padding, torch round trips."""

import dataclasses

import jax
import numpy as np
import pytest

from tests.factories import tiny_hf_model
from tests.official_reference import release_dit_forward
from vitra_jax.models.policy import VitraPolicy, policy_config
from vitra_jax.weights import hf, names, official

CFG = policy_config("tiny")  # DiT: depth 2, width 64, 4 heads (head dim 16), state hidden 128, freq 32; VLM width 48


@pytest.fixture(scope="module")
def params():
    p = VitraPolicy(CFG).init(jax.random.key(0))
    flat = names.flatten(jax.tree.map(np.asarray, p))
    rng = np.random.default_rng(0)  # AdaLN and output layers start at zero: make every weight distinct
    return names.unflatten({k: rng.normal(size=v.shape).astype(np.float32) for k, v in flat.items()})


@pytest.fixture(scope="module")
def state(params):
    return official.params_to_official(params, CFG)


def _dit_keys_from_release() -> dict[str, tuple[int, ...]]:
    """Reference §9.2 written out for the tiny sizes (torch Linear weights are (out, in))."""
    d, mlp, hd, s_hid, freq, tok = 64, 256, 16, 128, 32, 48
    keys = {}
    for i in range(2):
        b = f"act_model.net.blocks.{i}."
        keys.update({b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
                     b + "attn.q_norm.weight": (hd,), b + "attn.k_norm.weight": (hd,),
                     b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                     b + "mlp.fc1.weight": (mlp, d), b + "mlp.fc1.bias": (mlp,),
                     b + "mlp.fc2.weight": (d, mlp), b + "mlp.fc2.bias": (d,),
                     b + "adaLN_modulation.1.weight": (6 * d, d), b + "adaLN_modulation.1.bias": (6 * d,)})
    n = "act_model.net."
    keys.update({
        n + "final_layer.adaLN_modulation.1.weight": (2 * d, d), n + "final_layer.adaLN_modulation.1.bias": (2 * d,),
        n + "final_layer.linear.weight": (192, d), n + "final_layer.linear.bias": (192,),
        n + "t_embedder.mlp.0.weight": (d, freq), n + "t_embedder.mlp.0.bias": (d,),
        n + "t_embedder.mlp.2.weight": (d, d), n + "t_embedder.mlp.2.bias": (d,),
        n + "x_embedder.projector.0.weight": (d, 2 * 192), n + "x_embedder.projector.0.bias": (d,),
        n + "x_embedder.projector.2.weight": (d, d), n + "x_embedder.projector.2.bias": (d,),
        n + "state_embedder.projector.0.weight": (s_hid, 2 * 212), n + "state_embedder.projector.0.bias": (s_hid,),
        n + "state_embedder.projector.2.weight": (d, s_hid), n + "state_embedder.projector.2.bias": (d,),
        n + "state_embedder.projector.4.weight": (d, d), n + "state_embedder.projector.4.bias": (d,),
        n + "z_embedder.linear.weight": (d, tok), n + "z_embedder.linear.bias": (d,),
        n + "z_embedder.uncondition": (1, tok), n + "positional_embedding": (18, d),
        "fov_encoder.projector.0.weight": (tok, 2), "fov_encoder.projector.0.bias": (tok,),
        "fov_encoder.projector.2.weight": (tok, tok), "fov_encoder.projector.2.bias": (tok,),
        "cognition_token": (tok,),
    })
    return keys


def test_key_set_and_shapes_follow_the_release(state):
    non_backbone = {k: v.shape for k, v in state.items() if not k.startswith("backbone.")}
    assert non_backbone == _dit_keys_from_release()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert "backbone.language_model.lm_head.weight" in backbone  # tied head, present in a 4.47.1 state dict
    assert all(k.startswith(("backbone.vision_tower.vision_model.", "backbone.multi_modal_projector.",
                             "backbone.language_model.model.", "backbone.language_model.lm_head."))
               for k in backbone)


def test_export_then_import_is_bit_exact(params, state):
    back = names.flatten(official.official_to_params(state, CFG))
    ours = names.flatten(params)
    assert back.keys() == ours.keys()
    for k in ours:
        assert np.array_equal(back[k], ours[k]), k


def test_padding_is_zero_after_export_and_real_columns_are_where_the_release_reads_them(params, state):
    x_w = state["act_model.net.x_embedder.projector.0.weight"]
    s_w = state["act_model.net.state_embedder.projector.0.weight"]
    out_w, out_b = state["act_model.net.final_layer.linear.weight"], state["act_model.net.final_layer.linear.bias"]
    assert not x_w[:, 102:192].any() and not x_w[:, 294:].any()
    assert not s_w[:, 102:212].any() and not s_w[:, 314:].any()
    assert not out_w[102:].any() and not out_b[102:].any()
    # The release's Linear on its padded input [x·m (192) | m (192)] equals ours on [x·m (102) | m (102)].
    rng = np.random.default_rng(1)
    x, m = rng.normal(size=102), (rng.random(102) > 0.3).astype(np.float64)
    padded = np.concatenate([x * m, np.zeros(90), m, np.zeros(90)])
    dit = params["action_model"]
    ours = np.concatenate([x * m, m]) @ dit["x_embedder_fc1"]["kernel"] + dit["x_embedder_fc1"]["bias"]
    theirs = x_w @ padded + state["act_model.net.x_embedder.projector.0.bias"]
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    s_pad = np.concatenate([x * m, np.zeros(110), m, np.zeros(110)])
    np.testing.assert_allclose(s_w @ s_pad, np.concatenate([x * m, m]) @ dit["state_embedder_fc1"]["kernel"],
                               rtol=1e-5, atol=1e-5)
    h = rng.normal(size=64)
    np.testing.assert_allclose((out_w @ h + out_b)[:102], h @ dit["final_linear"]["kernel"] + dit["final_linear"]["bias"],
                               rtol=1e-5, atol=1e-5)
    # qkv keeps timm's (3, heads, head_dim) output order: row block 1 is the keys.
    qkv = state["act_model.net.blocks.1.attn.qkv.weight"]
    np.testing.assert_array_equal(qkv[64:128], dit["blocks"]["qkv"]["kernel"][1][:, 64:128].T)


def test_nonzero_padding_is_ignored_by_default_and_refused_when_checked(params, state):
    noisy = dict(state)
    for key, cols in (("act_model.net.x_embedder.projector.0.weight", slice(150, 160)),
                      ("act_model.net.state_embedder.projector.0.weight", slice(320, 330))):
        w = noisy[key].copy()
        w[:, cols] = 0.02  # as the release's untouched initial values there
        noisy[key] = w
    b = noisy["act_model.net.final_layer.linear.bias"].copy()
    b[150] = 1.0
    noisy["act_model.net.final_layer.linear.bias"] = b
    back = names.flatten(official.official_to_params(noisy, CFG))
    assert all(np.array_equal(back[k], v) for k, v in names.flatten(params).items())
    with pytest.raises(ValueError) as err:
        official.official_to_params(noisy, CFG, check_padding=True)
    msg = str(err.value)
    for key in ("x_embedder.projector.0.weight", "state_embedder.projector.0.weight", "final_layer.linear.bias"):
        assert f"{key} holds non-zero values" in msg
    assert "final_layer.linear.weight holds" not in msg


def test_missing_unexpected_and_misshaped_keys_are_all_named(state):
    bad = dict(state)
    del bad["act_model.net.blocks.1.attn.q_norm.weight"]
    del bad["backbone.language_model.model.layers.0.mlp.down_proj.weight"]
    bad["act_model.net.final_layer.linear.weight"] = np.zeros((102, 64), np.float32)
    bad["act_model.net.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError) as err:
        official.official_to_params(bad, CFG)
    msg = str(err.value)
    assert "missing act_model.net.blocks.1.attn.q_norm.weight" in msg
    assert "missing backbone.language_model.model.layers.0.mlp.down_proj.weight" in msg
    assert "act_model.net.final_layer.linear.weight has shape (102, 64), expected (192, 64)" in msg
    assert "unexpected act_model.net.extra.weight" in msg
    bad = dict(state)
    bad["backbone.language_model.model.norm.weight"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="language_model.model.norm.weight"):
        official.official_to_params(bad, CFG)


def test_current_transformers_key_style_backbone_imports_the_same():
    model = tiny_hf_model()
    tensors = {k: v.numpy() for k, v in model.state_dict().items()}  # model.language_model.*, lm_head.weight
    cfg = dataclasses.replace(CFG, vlm=hf.config_from_hf(model.config.to_dict()))
    p = VitraPolicy(cfg).init(jax.random.key(1))
    p = {**jax.tree.map(np.asarray, p), "vlm": hf.params_from_hf_tensors(cfg.vlm, tensors)}
    release_style = official.params_to_official(p, cfg)
    new_style = {k: v for k, v in release_style.items() if not k.startswith("backbone.")}
    new_style.update({"backbone." + k: v for k, v in tensors.items()})
    a = names.flatten(official.official_to_params(release_style, cfg))
    b = names.flatten(official.official_to_params(new_style, cfg))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # The exported backbone, renamed to this transformers' style, loads into HF strictly and equals it.
    import torch

    rename = (("backbone.vision_tower.vision_model.", "model.vision_tower."), ("backbone.multi_modal_projector.",
              "model.multi_modal_projector."), ("backbone.language_model.model.", "model.language_model."),
              ("backbone.language_model.lm_head.", "lm_head."))
    hf_state = {}
    for k, v in release_style.items():
        for old, new in rename:
            if k.startswith(old):
                hf_state[new + k[len(old):]] = torch.from_numpy(v)
    model.load_state_dict(hf_state, strict=True)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), tensors[k], err_msg=k)


def test_torch_weights_pt_and_safetensors_round_trip(params, state, tmp_path):
    import torch

    torch.save({k: torch.from_numpy(v.copy()) for k, v in state.items()}, tmp_path / "weights.pt")
    loaded = official.load_official_checkpoint(tmp_path)  # a checkpoint directory holding weights.pt
    assert loaded.keys() == state.keys() and all(np.array_equal(loaded[k], state[k]) for k in state)
    official.save_official_checkpoint(params, CFG, tmp_path / "out" / "weights.pt")
    official.save_official_checkpoint(params, CFG, tmp_path / "out" / "model.safetensors")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors", "weights.pt"]
    raw = torch.load(tmp_path / "out" / "weights.pt", map_location="cpu", weights_only=True)
    assert all(np.array_equal(raw[k].numpy(), state[k]) for k in state) and raw.keys() == state.keys()
    for name in ("weights.pt", "model.safetensors"):
        back = names.flatten(official.official_to_params(
            official.load_official_checkpoint(tmp_path / "out" / name), CFG))
        assert all(np.array_equal(back[k], v) for k, v in names.flatten(params).items()), name
    bf16 = {"cognition_token": torch.tensor([1.5, -2.0], dtype=torch.bfloat16)}
    torch.save(bf16, tmp_path / "bf16.pt")
    got = official.load_official_checkpoint(tmp_path / "bf16.pt")["cognition_token"]
    assert got.dtype == np.float32 and got.tolist() == [1.5, -2.0]
    with pytest.raises(FileNotFoundError, match="no official checkpoint"):
        official.load_official_checkpoint(tmp_path / "nothing")


def test_release_config_json_gives_the_3b_policy():
    release = {"fwd_pred_next_n": 16, "use_fov": True, "untied_cognition_token": True, "use_state": "DiT",
               "loss_type": "human", "train_setup": {"freeze_option": "freeze_vision_encoder"},
               "state_encoder": {"state_dim": 212},
               "action_model": {"model_type": "DiT-B", "token_size": 2304, "action_dim": 192, "hidden_size": 1024},
               "vlm": {"pretrained_model_name_or_path": "google/paligemma2-3b-mix-224"},
               "repeated_diffusion_steps": 8}
    cfg = official.policy_config_from_official(release)
    three_b = policy_config("3b")
    assert cfg.vlm == three_b.vlm and cfg.repeats == 8 and cfg.freeze_vision
    d = cfg.dit
    assert (d.depth, d.width, d.num_heads, d.chunk_len, d.token_size) == (12, 768, 12, 16, 2304)
    assert d.qk_norm == "timm_0_9_10"
    robot = official.policy_config_from_official({**release, "loss_type": "robot", "repeated_diffusion_steps": 2})
    assert (robot.wrist_weight, robot.finger_weight, robot.repeats) == (1.6, 0.4, 2)
    with pytest.raises(ValueError, match="use_state must be 'DiT'.*action_model.action_dim must be 192"):
        official.policy_config_from_official({**release, "use_state": "VLM",
                                              "action_model": {**release["action_model"], "action_dim": 102}})


@pytest.mark.parametrize("qk_norm", ["timm_0_9_10", "rms"])
def test_exported_dit_run_as_the_release_runs_it_predicts_our_noise(params, qk_norm):
    from vitra_jax.models.dit import DiT

    dit_cfg = dataclasses.replace(CFG.dit, qk_norm=qk_norm)  # the release's norm, and ours

    small = jax.tree.map(lambda a: a * 0.3, params)  # keep activations moderate for a tight tolerance
    sd = official.params_to_official(small, CFG)
    for key, cols in (("act_model.net.x_embedder.projector.0.weight", np.r_[102:192, 294:384]),
                      ("act_model.net.state_embedder.projector.0.weight", np.r_[102:212, 314:424])):
        sd[key] = sd[key].copy()
        sd[key][:, cols] = 0.05  # release-like leftovers in the padding change nothing
    rng = np.random.default_rng(2)
    b = 3
    z = rng.normal(size=(b, 48)).astype(np.float32)
    t = np.array([0, 37, 99], np.float32)
    x = rng.normal(size=(b, 16, 192)).astype(np.float32)  # padded dims hold noise too, masked out
    mask = np.zeros((b, 16, 192), np.float32)
    mask[..., :102] = rng.random((b, 16, 102)) > 0.2
    state = rng.normal(size=(b, 212)).astype(np.float32)
    state_mask = np.zeros((b, 212), np.float32)
    state_mask[:, :102] = rng.random((b, 102)) > 0.2
    want = release_dit_forward(sd, z, t, x, mask, state, state_mask, CFG.dit.depth, CFG.dit.num_heads, qk_norm)
    ours = official.official_to_params(sd, CFG)["action_model"]
    got = DiT(dit_cfg).apply({"params": ours}, z, t.astype(np.int32), x[..., :102], mask[..., :102],
                             state[:, :102], state_mask[:, :102])
    np.testing.assert_allclose(np.asarray(got), want[..., :102], rtol=2e-4, atol=2e-4)
    assert np.abs(want[..., :102]).max() > 0.1  # the comparison is not between near-zero outputs


# The release's vitra/configs/human_pretrain.json, the fields that shape the model (written out by hand).
RELEASE_PRETRAIN = {"vla_name": "VITRA_Paligemma", "fwd_pred_next_n": 16, "use_fov": True,
                    "untied_cognition_token": True, "use_state": "DiT", "loss_type": "human",
                    "train_setup": {"freeze_option": "freeze_vision_encoder"}, "state_encoder": {"state_dim": 212},
                    "action_model": {"model_type": "DiT-B", "token_size": 2304, "action_dim": 192},
                    "vlm": {"type": "PaliGemmaForConditionalGeneration", "name": "paligemma",
                            "pretrained_model_name_or_path": "google/paligemma2-3b-mix-224"},
                    "repeated_diffusion_steps": 8}


def _release_3b(**dit):
    cfg = policy_config("3b")
    return dataclasses.replace(cfg, dit=dataclasses.replace(cfg.dit, qk_norm="timm_0_9_10", **dit))


def test_official_config_writes_the_release_fields_and_reads_back_the_same_config():
    from vitra_jax.models.paligemma import paligemma_config

    cfg = _release_3b()
    written = official.official_config(cfg)
    for key, value in RELEASE_PRETRAIN.items():
        got = written[key]
        assert (got == value if not isinstance(value, dict) else {k: got[k] for k in value} == value), key
    assert official.policy_config_from_official(written) == cfg
    variants = [
        dataclasses.replace(_release_3b(), wrist_weight=1.6, finger_weight=0.4, repeats=2, freeze_vision=False),
        _release_3b(depth=24, width=1024, num_heads=16, chunk_len=8),
        dataclasses.replace(_release_3b(), vlm=paligemma_config("3b-448")),
    ]
    for v in variants:
        assert official.policy_config_from_official(official.official_config(v)) == v
    robot = official.official_config(variants[0])
    assert (robot["loss_type"], robot["train_setup"]["freeze_option"]) == ("robot", "full_finetune")
    assert official.official_config(variants[1])["action_model"]["model_type"] == "DiT-L"
    assert official.official_config(variants[2])["vlm"]["pretrained_model_name_or_path"].endswith("3b-mix-448")


def test_official_config_refuses_what_the_release_cannot_express():
    bad = dataclasses.replace(policy_config("3b"), wrist_weight=2.0)  # q/k norm 'rms', odd loss weights
    with pytest.raises(ValueError) as err:
        official.official_config(bad)
    assert "dit.qk_norm is 'rms'; the release fixes it to 'timm_0_9_10'" in str(err.value)
    assert "loss weights {'wrist': 2.0, 'fingers': 1.0}" in str(err.value)
    tiny = dataclasses.replace(CFG, dit=dataclasses.replace(CFG.dit, qk_norm="timm_0_9_10"))
    with pytest.raises(ValueError) as err:
        official.official_config(tiny)
    msg = str(err.value)
    assert "(2, 64, 4) is none of the release's presets" in msg
    assert "dit.state_hidden is 128; the release fixes it to 3072" in msg and "pass vlm_name" in msg


def test_statistics_in_the_official_file_format_round_trip(tmp_path):
    import json

    from vitra_jax.data.statistics import DatasetStatistics, load_official

    rng = np.random.default_rng(4)
    arrays = {f"{kind}_{f}": rng.normal(size=102) for kind in ("action", "state") for f in ("mean", "q01", "q99")}
    arrays.update(action_std=rng.uniform(0.1, 2, 102), state_std=rng.uniform(0.1, 2, 102))
    stats = DatasetStatistics(**arrays, num_frames=1234, num_episodes=5)
    written = stats.to_official()
    # the release's layout (§2.7, §9.3): per hand, 61-d states (51 + 10 MANO shape values) and 51-d actions
    assert sorted(written) == ["action_left", "action_right", "num_traj", "state_left", "state_right"]
    assert written["num_traj"] == 1234
    np.testing.assert_array_equal(written["state_right"]["mean"][:51], arrays["state_mean"][51:])
    assert written["state_left"]["mean"][51:] == [0.0] * 10 and written["state_left"]["std"][51:] == [1.0] * 10
    np.testing.assert_array_equal(written["action_left"]["std"], arrays["action_std"][:51])
    assert len(written["action_right"]["mean"]) == 51
    (tmp_path / "dataset_statistics.json").write_text(json.dumps(written))
    back = load_official(tmp_path / "dataset_statistics.json")
    for name in ("action_mean", "action_std", "state_mean", "state_std"):
        np.testing.assert_array_equal(getattr(back, name), arrays[name], err_msg=name)
    assert back.num_frames == 1234
