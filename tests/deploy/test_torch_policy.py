"""The torch deploy policy against the JAX policy: same official weights, same inputs, same noise."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
import torch

from vitra_jax import export, inference
from vitra_jax.deploy.policy import DeployConfig, TorchVitraPolicy
from vitra_jax.deploy import runner
from vitra_jax.deploy.runner import DeployedPolicy
from vitra_jax.handspace.normalize import GaussianNormalizer
from vitra_jax.models.policy import VitraPolicy, fake_batch, policy_config
from vitra_jax.tokenizer import Tokenizer, train_sentencepiece
from vitra_jax.weights import hf, names, official

QK_NORMS = ("timm_0_9_10", "rms")


class Pair:
    """A tiny JAX policy with random weights and the torch policy loaded from its official state dict."""

    def __init__(self, qk_norm: str):
        base = policy_config("tiny")
        self.cfg = dataclasses.replace(base, dit=dataclasses.replace(base.dit, qk_norm=qk_norm))
        self.policy = VitraPolicy(self.cfg)
        flat = names.flatten(jax.tree.map(np.asarray, self.policy.init(jax.random.key(0))))
        rng = np.random.default_rng(0)
        # AdaLN and output layers start at zero: draw every non-VLM weight, small enough that CFG at 5 keeps
        # the samples moderate.
        flat = {k: v if k.startswith("vlm/") else (0.05 * rng.normal(size=v.shape)).astype(np.float32)
                for k, v in flat.items()}
        # q and k with a mean over the head dim, where the two q/k norms differ (a zero-mean q would hide it)
        flat["action_model/blocks/qkv/bias"][:, :2 * base.dit.width] += 0.5
        self.params = names.unflatten(flat)
        self.state_dict = official.params_to_official(self.params, self.cfg)
        self.config = export.deploy_config_from_policy_config(self.cfg, hf.hf_config_dict(self.cfg.vlm))
        self.torch = TorchVitraPolicy(self.config)
        self.torch.load_official_state_dict(self.state_dict)


@functools.cache
def _pair(qk_norm: str) -> Pair:
    return Pair(qk_norm)


@pytest.fixture(scope="module", params=QK_NORMS)
def pair(request):
    return _pair(request.param)


@pytest.fixture(scope="module")
def batch(pair):
    b = fake_batch(pair.cfg, 3, seed=1)
    b["input_mask"][1, 20:] = False  # a shorter prompt: FoV and cognition follow its last real token
    b["tokens"][1, 20:] = 0
    b["action_mask"][0, :, :51] = 0
    b["action_mask"][2, 9:] = 0
    b["state_mask"][2, 51:] = 0
    b["state"] = b["state"] * b["state_mask"]
    return b


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_cognition_equals_jax(pair, batch):
    want = np.asarray(pair.policy.cognition(pair.params, batch["images"], batch["tokens"], batch["input_mask"],
                                            batch["fov"]))
    got = pair.torch.cognition(_t(batch["images"]), _t(batch["tokens"]), _t(batch["input_mask"]),
                               _t(batch["fov"])).numpy()
    assert got.shape == want.shape == (3, pair.cfg.vlm.llm.width)
    err = np.abs(got - want).max()
    print(f"cognition max abs err {err:.2e} ({pair.cfg.dit.qk_norm})")
    assert err <= 1e-5, err
    assert np.abs(want).max() > 0.5


TEXTS = ["Left hand: None. Right hand: Pick up the red cup.", "Left hand: Hold the bowl. Right hand: None.",
         "Left hand: Open the drawer. Right hand: Put the spoon in it."]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return Tokenizer(train_sentencepiece(TEXTS * 15, tmp_path_factory.mktemp("spm"), vocab_size=300))


@pytest.fixture(scope="module")
def normalizer():
    rng = np.random.default_rng(3)
    return GaussianNormalizer(rng.normal(size=102), rng.uniform(0.5, 2, 102), rng.normal(size=102),
                              rng.uniform(0.5, 2, 102))


def _observation(i: int) -> dict:
    """Observation i: its own image size, instruction, state, masks and FoV."""
    rng = np.random.default_rng(10 + i)
    state_mask, action_mask = np.ones(102), np.ones((16, 102))
    if i == 0:
        state_mask[:51], action_mask[:, :51] = 0, 0  # left hand absent
    if i == 2:
        action_mask[11:] = 0  # chunk runs past the episode end
    return {"image": rng.integers(0, 256, (40 + 8 * i, 64 - 4 * i, 3), dtype=np.uint8), "instruction": TEXTS[i],
            "state": 0.5 * rng.normal(size=102), "state_mask": state_mask, "action_mask": action_mask,
            "fov": np.deg2rad([60.0 - 5 * i, 45.0 + 3 * i])}


def _jax_step_noise(rng, shape) -> np.ndarray:
    """The per-step DDPM noise `VitraPolicy.denoise` draws from `rng`."""
    rng, _ = jax.random.split(rng)
    return np.stack([np.asarray(jax.random.normal(jax.random.fold_in(rng, i), shape)) for i in range(100)])


@pytest.mark.parametrize("use_ddim", [True, False])
def test_predict_action_equals_jax(pair, tokenizer, normalizer, use_ddim):
    """Same image, instruction, state, masks, FoV and noise: fp32 torch equals the JAX `predict_action`.

    Random weights do not denoise, so sampling amplifies x_T (DDIM by up to 1/sqrt(ᾱ_90) ≈ 6) and DDPM's
    per-step noise (by up to 1/sqrt(ᾱ_99), hundreds): DDIM starts from 0.3·N(0, 1) to keep the samples O(10)
    for an absolute 1e-4 bound (16× that for the trajectory, a sum over the chunk: it reaches ~200 here); DDPM, whose unit step noise JAX draws itself, reaches 1e4 and is bounded at
    1e-5 of its samples' size (fp32 rounding grows with them).
    """
    deployed = DeployedPolicy(pair.torch, tokenizer, normalizer)
    obs = _observation(1)
    s = 2
    noise = (0.3 if use_ddim else 1.0) * np.random.default_rng(4).normal(size=(s, 16, 102)).astype(np.float32)
    rng = jax.random.key(7)
    want = inference.predict_action(pair.policy, pair.params, *obs.values(), tokenizer, normalizer, num_samples=s,
                                    cfg_scale=5.0, num_ddim_steps=10, use_ddim=use_ddim, rng=rng, noise=noise[None])
    step_noise = None if use_ddim else _jax_step_noise(rng, (s, 16, 102))
    got = deployed.predict_action(**obs, num_samples=s, cfg_scale=5.0, num_ddim_steps=10, use_ddim=use_ddim,
                                  noise=noise, step_noise=step_noise)
    # DDPM's samples reach 1e4: Euler angles of their integrated rotations wrap chaotically, so only the
    # normalized and unnormalized actions are compared there.
    keys = ("normalized", "actions", "trajectory") if use_ddim else ("normalized", "actions")
    size = {k: np.abs(want[k]).max() for k in keys}
    errs = {k: np.abs(got[k] - want[k]).max() for k in keys}
    print(f"{pair.cfg.dit.qk_norm} ddim={use_ddim} max abs err {errs}, max abs value {size}")
    bound = {k: 1e-4 if use_ddim else 1e-5 * size[k] for k in keys}
    if use_ddim:  # the trajectory adds up to 16 actions' translations (and composes their rotations)
        bound["trajectory"] = 16 * bound["actions"]
    assert all(errs[k] <= bound[k] for k in keys), (errs, bound)
    assert got["normalized"].shape == (s, 16, 102) and got["trajectory"].shape == (s, 17, 102)
    # the samples moved away from the noise and from each other: the comparison is not trivial
    assert np.abs(want["normalized"] - noise * obs["action_mask"]).max() > 0.5
    assert np.abs(want["normalized"][0] - want["normalized"][1]).max() > 0.1


def _fresh(pair, tmp_path=None) -> TorchVitraPolicy:
    model = TorchVitraPolicy(pair.config)
    model.load_official_state_dict(pair.state_dict)
    return model


@pytest.fixture(scope="module")
def timm_pair():
    return _pair("timm_0_9_10")


def test_predict_batch_equals_single_calls(timm_pair, tokenizer, normalizer):
    deployed = DeployedPolicy(timm_pair.torch, tokenizer, normalizer)
    obs = [{**_observation(i), "seed": 20 + i} for i in range(3)]
    obs[2].update(num_samples=3, cfg_scale=2.0, num_ddim_steps=5)  # its own sampling group
    batched = deployed.predict_batch(obs)
    for o, got in zip(obs, batched, strict=True):
        single = deployed.predict_action(**o)
        # fp32 batching changes the last bits of the normalized sample; unnormalizing scales them by the
        # action std (up to 2 here) and the trajectory adds up 16 actions
        bound = 1e-5 * normalizer.action_std.max()
        for k, atol in (("normalized", 1e-5), ("actions", bound), ("trajectory", 16 * bound)):
            np.testing.assert_allclose(got[k], single[k], rtol=1e-5, atol=atol, err_msg=k)
    assert [b["normalized"].shape[0] for b in batched] == [1, 1, 3]
    assert np.abs(batched[0]["normalized"][0] - batched[1]["normalized"][0]).max() > 0.1
    # a seed fixes the sample; no seed draws a new one
    np.testing.assert_array_equal(deployed.predict_action(**obs[0])["normalized"],
                                  deployed.predict_action(**obs[0])["normalized"])
    unseeded = [deployed.predict_action(**{k: v for k, v in obs[0].items() if k != "seed"}) for _ in range(2)]
    assert np.abs(unseeded[0]["normalized"] - unseeded[1]["normalized"]).max() > 0.1


def test_bf16_vlm_stays_near_fp32(timm_pair, tokenizer, normalizer):
    obs = {**_observation(0), "seed": 5}
    fp32 = DeployedPolicy(_fresh(timm_pair), tokenizer, normalizer).predict_action(**obs)
    bf16_policy = DeployedPolicy(_fresh(timm_pair), tokenizer, normalizer, dtype="bfloat16")
    assert next(bf16_policy.model.backbone.parameters()).dtype == torch.bfloat16
    assert next(bf16_policy.model.act_model.parameters()).dtype == torch.float32
    bf16 = bf16_policy.predict_action(**obs)
    err = np.abs(bf16["normalized"] - fp32["normalized"]).max()
    rel = err / np.abs(fp32["normalized"]).max()
    print(f"bf16 VLM vs fp32: max abs diff {err:.3e} of max |value| {np.abs(fp32['normalized']).max():.2f} "
          f"(relative {rel:.2e})")
    assert rel < 5e-2
    assert bf16_policy.metadata()["dtype"] == "bfloat16"


def test_inputs_are_checked_and_options_named(timm_pair, tokenizer, normalizer):
    deployed = DeployedPolicy(timm_pair.torch, tokenizer, normalizer)
    obs = _observation(0)
    with pytest.raises(ValueError, match="observation 0: state must be finite with shape"):
        deployed.predict_action(**{**obs, "state": obs["state"][:50]})
    with pytest.raises(ValueError, match=r"observation 1: missing keys \['fov'\], unknown keys \['fovx'\]"):
        bad = {k: v for k, v in obs.items() if k != "fov"}
        deployed.predict_batch([obs, {**bad, "fovx": obs["fov"]}])
    with pytest.raises(ValueError, match=r"observation 1: image must be uint8 RGB, got dtype float32"):
        deployed.predict_batch([obs, {**obs, "image": obs["image"].astype(np.float32)}])
    with pytest.raises(ValueError, match=r"observation 0: image sides must be in \[1, any\], got \(0, 5\)"):
        deployed.predict_action(**{**obs, "image": np.zeros((0, 5, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"fov must be \(fov_x, fov_y\) in radians, each in \(0, π\), got \[60.0, 50.0\]"):
        deployed.predict_action(**{**obs, "fov": np.array([60.0, 50.0])})
    with pytest.raises(ValueError, match="noise must have shape"):
        deployed.predict_action(**obs, noise=np.zeros((2, 16, 102)))
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        DeployedPolicy(timm_pair.torch, tokenizer, normalizer, cuda_graphs=True)
    meta = deployed.metadata()
    assert (meta["action_dim"], meta["chunk_len"], meta["image_size"], meta["defaults"]["cfg_scale"]) == \
        (102, 16, timm_pair.cfg.vlm.image_size, 5.0)


def test_weights_pt_loads_strictly_and_keys_are_named(timm_pair, tmp_path):
    official.save_official_checkpoint(timm_pair.params, timm_pair.cfg, tmp_path / "weights.pt")
    sd = torch.load(tmp_path / "weights.pt", map_location="cpu", weights_only=True)
    assert "backbone.language_model.model.embed_tokens.weight" in sd  # the release's transformers-4.47.1 keys
    model = TorchVitraPolicy(timm_pair.config)
    model.load_official_state_dict(sd)
    own = model.state_dict()
    renamed = {"backbone.vision_tower.vision_model.": "backbone.model.vision_tower.",
               "backbone.multi_modal_projector.": "backbone.model.multi_modal_projector.",
               "backbone.language_model.model.": "backbone.model.language_model.",
               "backbone.language_model.lm_head.": "backbone.lm_head."}
    for key, value in sd.items():
        new = next((n + key[len(o):] for o, n in renamed.items() if key.startswith(o)), key)
        assert torch.equal(own[new], value), key
    assert set(own) == {next((n + k[len(o):] for o, n in renamed.items() if k.startswith(o)), k) for k in sd}
    # the installed transformers' key style loads the same
    TorchVitraPolicy(timm_pair.config).load_official_state_dict(own)
    bad = dict(sd)
    del bad["act_model.net.blocks.1.attn.q_norm.weight"]
    bad["act_model.net.extra.weight"] = torch.zeros(3)
    bad["act_model.net.final_layer.linear.weight"] = torch.zeros(102, 64)
    with pytest.raises(ValueError) as err:
        TorchVitraPolicy(timm_pair.config).load_official_state_dict(bad)
    msg = str(err.value)
    assert "missing act_model.net.blocks.1.attn.q_norm.weight" in msg
    assert "unexpected act_model.net.extra.weight" in msg
    assert "act_model.net.final_layer.linear.weight has shape (102, 64), expected (192, 64)" in msg


def test_deploy_config_round_trips_through_json(timm_pair):
    import json

    c = timm_pair.config
    assert DeployConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(ValueError, match=r"unknown keys \['depth'\], missing keys \['qk_norm'\]"):
        DeployConfig.from_dict({**{k: v for k, v in c.to_dict().items() if k != "qk_norm"}, "depth": 3})
    with pytest.raises(ValueError, match="qk_norm must be one of"):
        dataclasses.replace(c, qk_norm="layer")
    with pytest.raises(ValueError, match="image_size 224 differs"):
        dataclasses.replace(c, image_size=224)


def test_compiled_dit_traces_as_one_graph_and_samples_the_same(timm_pair):
    """`compile_dit` through torch.compile's default inductor backend (what `DeployedPolicy(compile=True)`
    uses; C++ kernels on the CPU) with fullgraph=True, so a graph break would raise."""
    model = _fresh(timm_pair)
    keys = list(model.state_dict())
    rng = np.random.default_rng(6)
    z = torch.from_numpy(rng.normal(size=(2, 48)).astype(np.float32))
    state = torch.from_numpy(rng.normal(size=(2, 102)).astype(np.float32))
    ones = torch.ones(2, 102)
    mask = torch.ones(2, 16, 102)
    noise = torch.from_numpy(rng.normal(size=(2, 1, 16, 102)).astype(np.float32))
    want = model.denoise(z, state, ones, mask, noise=noise)
    model.compile_dit(fullgraph=True)
    got = model.denoise(z, state, ones, mask, noise=noise)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # fused kernels reorder fp32 sums
    assert list(model.state_dict()) == keys  # the compiled wrapper is not a registered submodule
    model.compile_dit(False)
    assert model._dit_step() == model.act_model.net.step


def test_warmup_leaves_results_and_the_global_generator_alone(timm_pair, tokenizer, normalizer):
    obs = _observation(1)
    reference = DeployedPolicy(_fresh(timm_pair), tokenizer, normalizer)
    policy = DeployedPolicy(_fresh(timm_pair), tokenizer, normalizer)
    torch.manual_seed(5)
    want = reference.predict_action(**obs, num_ddim_steps=4)
    torch.manual_seed(5)
    seconds = policy.warmup([1, 3], num_ddim_steps=4)
    got = policy.predict_action(**obs, num_ddim_steps=4)  # unseeded: draws from the global generator
    assert sorted(seconds) == [1, 3] and all(v > 0 for v in seconds.values())
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    with pytest.raises(ValueError, match="unknown keys"):
        policy.warmup([1], temperature=1.0)


def test_graph_cache_keys_on_options_and_shapes_and_drops_the_least_recent(timm_pair, tokenizer, normalizer,
                                                                         monkeypatch):
    """The CUDA-graph bookkeeping with the capture replaced by an eager call (CPU): one entry per stage, options
    and shapes, at most MAX_GRAPHS, least recently used dropped, results those of eager calls."""
    captured = []

    class Eager:
        def __init__(self, fn, inputs, options):
            self.fn, self.options = fn, options
            captured.append((fn.__name__, options.get("cfg_scale"), {k: tuple(v.shape) for k, v in inputs.items()}))

        def __call__(self, inputs):
            return self.fn(**inputs, **self.options)

    monkeypatch.setattr(runner, "_Captured", Eager)
    monkeypatch.setattr(runner, "MAX_GRAPHS", 3)
    eager = DeployedPolicy(_fresh(timm_pair), tokenizer, normalizer)
    graphed = DeployedPolicy(_fresh(timm_pair), tokenizer, normalizer)
    graphed.cuda_graphs = True  # the real class refuses a CPU device
    obs = _observation(0)
    for cfg_scale in (2.0, 3.0, 2.0, 4.0, 3.0):
        got = graphed.predict_action(**obs, cfg_scale=cfg_scale, num_ddim_steps=3, seed=1)
        want = eager.predict_action(**obs, cfg_scale=cfg_scale, num_ddim_steps=3, seed=1)
        np.testing.assert_array_equal(got["normalized"], want["normalized"])
    # cognition once (used by every call); denoise for 2.0 and 3.0; 2.0 again is cached; 4.0 drops the least
    # recently used (3.0), so 3.0 is captured again and drops 2.0
    assert [(name, cfg) for name, cfg, _ in captured] == [
        ("cognition", None), ("denoise", 2.0), ("denoise", 3.0), ("denoise", 4.0), ("denoise", 3.0)]
    graphed.predict_batch([obs, obs])  # another batch size: new shapes, new entries
    assert captured[-2][0] == "cognition" and captured[-2][2]["images"][0] == 2
