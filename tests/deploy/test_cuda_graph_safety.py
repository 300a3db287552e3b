"""What `DeployedPolicy(cuda_graphs=True)` captures must be capturable: no host sync, no host tensors.

A CUDA graph records device work only. Inside a capture, reading a value back (`.item()`, a data-dependent
shape, `if tensor:`) fails, and a tensor made on the host then copied over is baked in as a stale copy. Both
show up without a GPU: the model is built on the meta device and run with meta inputs outside any device
context, so a value read raises and a tensor created without the inputs' device lands on the CPU, which
the dispatch log below records; tensors built from host data (`torch.tensor`, `torch.as_tensor`) are logged by
name, as they would be copies from the host on a GPU.
"""

import collections

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from vitra_jax import export
from vitra_jax.deploy.policy import TorchVitraPolicy
from vitra_jax.models.policy import policy_config
from vitra_jax.weights import hf


class DeviceLog(TorchDispatchMode):
    """Counts the tensor arguments and results of dispatched ops by device."""

    def __init__(self):
        super().__init__()
        self.devices: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                self.devices[t.device.type] += 1
        return out


class HostData(TorchFunctionMode):
    """Counts tensors built from host data."""

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.tensor, torch.as_tensor):
            self.calls[func.__name__] += 1
        return func(*args, **(kwargs or {}))


class Capturable:
    """Runs a block under both logs; `problems` lists what a CUDA graph capture could not hold."""

    def __enter__(self):
        self.ops, self.host = DeviceLog(), HostData()
        self.host.__enter__()
        self.ops.__enter__()
        return self

    def __exit__(self, *exc):
        self.ops.__exit__(*exc)
        self.host.__exit__(*exc)

    @property
    def problems(self) -> dict:
        return {**{f"{d} tensors": n for d, n in self.ops.devices.items() if d != "meta"}, **self.host.calls}


@pytest.fixture(scope="module")
def meta_model():
    cfg = policy_config("tiny")
    config = export.deploy_config_from_policy_config(cfg, hf.hf_config_dict(cfg.vlm))
    with torch.device("meta"):
        return TorchVitraPolicy(config)


def _meta(*shape, dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype, device="meta")


def test_the_logs_see_host_tensors_and_meta_refuses_a_value_read():
    x = _meta(3)
    with Capturable() as log:
        _ = x + torch.ones(3).to(x.device)  # made on the host, then copied: not capturable
    assert log.problems == {"cpu tensors": 2}  # torch.ones and the copy to the device
    with Capturable() as log:
        _ = x + torch.tensor([1.0, 2.0, 3.0], device=x.device) + torch.full((3,), 2.0, device=x.device)
    assert log.problems == {"tensor": 1}
    with Capturable() as log:
        _ = x + torch.arange(3, device=x.device) * torch.full((3,), 2.0, device=x.device)
    assert log.problems == {}
    with pytest.raises((RuntimeError, NotImplementedError)):
        float(x.sum())


@pytest.mark.parametrize("guided,use_ddim", [(True, True), (False, True), (True, False)])
def test_prefix_and_denoising_stay_on_the_device(meta_model, guided, use_ddim):
    c = meta_model.config
    b, s = 2, 3
    with Capturable() as log:
        z = meta_model.cognition(_meta(b, c.image_size, c.image_size, 3), _meta(b, c.max_text_len, dtype=torch.long),
                                 _meta(b, c.max_text_len, dtype=torch.bool), _meta(b, 2))
        out = meta_model.denoise(z, _meta(b, 102), _meta(b, 102), _meta(b, c.chunk_len, 102),
                                 noise=_meta(b, s, c.chunk_len, 102), num_samples=s,
                                 cfg_scale=5.0 if guided else 1.0, num_ddim_steps=10, use_ddim=use_ddim,
                                 step_noise=None if use_ddim else _meta(c.num_train_steps, b * s, c.chunk_len, 102))
    assert out.shape == (b, s, c.chunk_len, 102) and out.device.type == "meta"
    assert log.problems == {}
    assert log.ops.devices["meta"] > 1000  # the whole model ran under the log
