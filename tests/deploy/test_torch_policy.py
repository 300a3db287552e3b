"""The torch deploy policy against the JAX policy: same official weights, same inputs, same noise."""

import dataclasses

import jax
import numpy as np
import pytest
import torch

from vitra_jax.deploy.policy import DeployConfig, TorchVitraPolicy
from vitra_jax.models.policy import VitraPolicy, fake_batch, policy_config
from vitra_jax.weights import hf, names, official

QK_NORMS = ("timm_0_9_10", "rms")


def deploy_config(cfg) -> DeployConfig:
    d = cfg.dit
    return DeployConfig(vlm=hf.hf_config_dict(cfg.vlm), qk_norm=d.qk_norm, max_text_len=cfg.max_text_len,
                        image_size=cfg.vlm.image_size, dit_depth=d.depth, dit_width=d.width, dit_heads=d.num_heads,
                        mlp_ratio=d.mlp_ratio, freq_dim=d.freq_dim, state_hidden=d.state_hidden,
                        chunk_len=d.chunk_len, num_train_steps=cfg.num_train_steps)


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
        self.params = names.unflatten({k: v if k.startswith("vlm/") else
                                       (0.08 * rng.normal(size=v.shape)).astype(np.float32)
                                       for k, v in flat.items()})
        self.state_dict = official.params_to_official(self.params, self.cfg)
        self.config = deploy_config(self.cfg)
        self.torch = TorchVitraPolicy(self.config)
        self.torch.load_official_state_dict(self.state_dict)


@pytest.fixture(scope="module", params=QK_NORMS)
def pair(request):
    return Pair(request.param)


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
