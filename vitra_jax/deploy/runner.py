"""`DeployedPolicy`: numpy observations in, action chunks and hand trajectories out, on a torch device.

One call prepares the inputs as training did (image by the config's preprocess mode, prompt tokens, state
normalized then masked), runs the VLM prefix once for the whole batch and the denoising loop once per group
of observations sharing sampling options, then unnormalizes the actions and integrates the trajectories
(`vitra_jax.data.observation.action_outputs`). Results mean what `vitra_jax.inference.predict_action`
returns. Precision: 'float32', or 'bfloat16' for the VLM with the DiT, FoV encoder and cognition token in fp32
(as the release runs them). `compile` runs the DiT step through `torch.compile`; `cuda_graphs` replays the VLM
prefix and the denoising loop as CUDA graphs captured per batch size and sampling options (CUDA only): eager
inference launches every op from Python (about 4,400 for the 3B prefix and 8,700 for 10 DDIM steps with CFG).
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from vitra_jax.data.observation import action_outputs, normalized_state
from vitra_jax.deploy import checks
from vitra_jax.deploy.policy import DeployConfig, TorchVitraPolicy
from vitra_jax.deploy.preprocess import prepare_images
from vitra_jax.deploy.sampling import SAMPLING_DEFAULTS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_REQUIRED = ("image", "instruction", "state", "state_mask", "action_mask", "fov")
_OPTIONAL = (*SAMPLING_DEFAULTS, "seed", "noise", "step_noise")
IMAGE_THREADS = min(8, os.cpu_count() or 1)
MAX_GRAPHS = 32  # captured graphs kept (each holds its own GPU memory); the least recently used goes first


class _Captured:
    """`fn(**inputs, **options)` captured as a CUDA graph for the shapes of `inputs` (device tensors); a call
    copies new inputs into the captured buffers and replays it. The captured region must not sync with the host
    or create host tensors (tests/deploy check `cognition` and `denoise` for this on the meta device)."""

    def __init__(self, fn: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], options: dict[str, Any]):
        self.inputs = {k: v.clone() for k, v in inputs.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture, as CUDA graphs require
            for _ in range(2):
                fn(**self.inputs, **options)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(**self.inputs, **options)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        for k, v in inputs.items():
            self.inputs[k].copy_(v)
        self.graph.replay()
        return self.output.clone()


class DeployedPolicy:
    """A `TorchVitraPolicy` with its tokenizer and normalizer, ready for raw observations.

    The model is moved to `device` (and its VLM cast to bf16 for dtype='bfloat16') in place.
    """

    def __init__(self, model: TorchVitraPolicy, tokenizer: Any, normalizer: Any, config: DeployConfig | None = None,
                 device: str | torch.device = "cpu", dtype: str = "float32", *, compile: bool = False,
                 cuda_graphs: bool = False):
        config = model.config if config is None else config
        if config != model.config:
            raise ValueError("config differs from the model's DeployConfig")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"cuda_graphs needs a CUDA device, got {self.device}")
        self.model, self.tokenizer, self.normalizer, self.config = model, tokenizer, normalizer, config
        self.dtype, self.compile, self.cuda_graphs = dtype, compile, cuda_graphs
        model.to(self.device).eval()
        model.backbone.to(DTYPES[dtype])
        model.compile_dit(compile)
        self._graphs: collections.OrderedDict[tuple, _Captured] = collections.OrderedDict()
        self._pool: ThreadPoolExecutor | None = None  # resizes a batch's images in parallel

    def metadata(self) -> dict:
        """JSON-able description of what this policy takes and returns."""
        c = self.config
        return {"action_dim": c.action_dim, "state_dim": c.state_dim, "chunk_len": c.chunk_len,
                "image_size": c.image_size, "max_text_len": c.max_text_len, "preprocess": c.preprocess,
                "qk_norm": c.qk_norm, "num_train_steps": c.num_train_steps, "dtype": self.dtype,
                "device": str(self.device), "compile": self.compile, "cuda_graphs": self.cuda_graphs,
                "defaults": dict(SAMPLING_DEFAULTS)}

    def predict_action(self, image: np.ndarray, instruction: str, state: np.ndarray, state_mask: np.ndarray,
                       action_mask: np.ndarray, fov: np.ndarray, *, num_samples: int = 1, cfg_scale: float = 5.0,
                       num_ddim_steps: int = 10, use_ddim: bool = True, noise: np.ndarray | None = None,
                       seed: int | None = None, step_noise: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """{"normalized": (S, N, 102), "actions": (S, N, 102) unnormalized and masked, "trajectory": (S, N+1, 102)
        integrated from the raw state}, float64. `noise` (S, N, 102) fixes x_T and `step_noise`
        (num_train_steps, S, N, 102) the DDPM per-step noise; `seed` seeds what is not given (None: torch's
        global generator)."""
        obs = {"image": image, "instruction": instruction, "state": state, "state_mask": state_mask,
               "action_mask": action_mask, "fov": fov, "num_samples": num_samples, "cfg_scale": cfg_scale,
               "num_ddim_steps": num_ddim_steps, "use_ddim": use_ddim, "noise": noise, "seed": seed,
               "step_noise": step_noise}
        return self.predict_batch([obs])[0]

    # ----------------------------------------------------------------------------------------------- batch
    def _check(self, i: int, obs: dict) -> dict:
        c = self.config
        missing = [k for k in _REQUIRED if k not in obs]
        unknown = sorted(set(obs) - set(_REQUIRED) - set(_OPTIONAL))
        if missing or unknown:
            raise ValueError(f"observation {i}: missing keys {missing}, unknown keys {unknown}")
        if not isinstance(obs["instruction"], str):
            raise ValueError(f"observation {i}: instruction must be a str, got {type(obs['instruction']).__name__}")
        problem = checks.image_problem(obs["image"])
        if problem:
            raise ValueError(f"observation {i}: {problem}")
        shapes = {"state": (c.state_dim,), "state_mask": (c.state_dim,), "action_mask": (c.chunk_len, c.action_dim),
                  "fov": (2,)}
        for k, shape in shapes.items():
            v = np.asarray(obs[k], np.float64)
            if v.shape != shape or not np.all(np.isfinite(v)):
                raise ValueError(f"observation {i}: {k} must be finite with shape {shape}, got {v.shape}")
        problem = checks.fov_problem(obs["fov"])
        if problem:
            raise ValueError(f"observation {i}: {problem}")
        opts = {k: obs[k] if obs.get(k) is not None else v for k, v in SAMPLING_DEFAULTS.items()}
        opts = {"num_samples": int(opts["num_samples"]), "cfg_scale": float(opts["cfg_scale"]),
                "num_ddim_steps": int(opts["num_ddim_steps"]), "use_ddim": bool(opts["use_ddim"])}
        if opts["num_samples"] < 1:
            raise ValueError(f"observation {i}: num_samples must be >= 1, got {opts['num_samples']}")
        noise = obs.get("noise")
        want = (opts["num_samples"], c.chunk_len, c.action_dim)
        if noise is not None and np.shape(noise) not in (want, (1, *want)):
            raise ValueError(f"observation {i}: noise must have shape {want}, got {np.shape(noise)}")
        step_noise = obs.get("step_noise")
        if step_noise is not None and np.shape(step_noise) != (c.num_train_steps, *want):
            raise ValueError(f"observation {i}: step_noise must have shape {(c.num_train_steps, *want)}, "
                             f"got {np.shape(step_noise)}")
        return opts

    def _draw(self, obs: dict, opts: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x_T (S, N, A) and, for DDPM, the per-step noise (T, S, N, A); drawn on the CPU so a seed means the
        same noise on every device."""
        c = self.config
        shape = (opts["num_samples"], c.chunk_len, c.action_dim)
        gen = None
        if obs.get("seed") is not None:
            gen = torch.Generator().manual_seed(int(obs["seed"]))
        x = torch.randn(shape, generator=gen) if obs.get("noise") is None else \
            torch.as_tensor(np.asarray(obs["noise"], np.float32)).reshape(shape)
        if opts["use_ddim"]:
            return x, None
        if obs.get("step_noise") is not None:
            return x, torch.as_tensor(np.asarray(obs["step_noise"], np.float32))
        return x, torch.randn((c.num_train_steps, *shape), generator=gen)

    @torch.no_grad()
    def predict_batch(self, observations: list[dict]) -> list[dict[str, np.ndarray]]:
        """`predict_action` for each observation dict (keys: image, instruction, state, state_mask, action_mask,
        fov; optional num_samples, cfg_scale, num_ddim_steps, use_ddim, seed, noise, step_noise), with one VLM
        pass."""
        if not observations:
            return []
        opts = [self._check(i, o) for i, o in enumerate(observations)]
        c, dev = self.config, self.device
        if len(observations) > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(IMAGE_THREADS, thread_name_prefix="deploy-image")
        images = prepare_images([o["image"] for o in observations], c.image_size, c.preprocess, self._pool)
        tokens, mask = self.tokenizer.batch_encode([o["instruction"] for o in observations], c.max_text_len)
        state_masks = np.stack([np.asarray(o["state_mask"], np.float32) for o in observations])
        states = np.stack([normalized_state(self.normalizer, o["state"], m) for o, m in zip(observations, state_masks,
                                                                                           strict=True)])
        action_masks = np.stack([np.asarray(o["action_mask"], np.float32) for o in observations])
        fov = np.stack([np.asarray(o["fov"], np.float32) for o in observations])
        z = self._run("cognition", {"images": torch.from_numpy(images).to(dev),
                                    "tokens": torch.from_numpy(np.asarray(tokens, np.int64)).to(dev),
                                    "input_mask": torch.from_numpy(np.asarray(mask, bool)).to(dev),
                                    "fov": torch.from_numpy(fov).to(dev)}, {})
        groups: dict[tuple, list[int]] = {}
        for i, o in enumerate(opts):
            groups.setdefault(tuple(o.values()), []).append(i)
        normalized: list[np.ndarray | None] = [None] * len(observations)
        for idx in groups.values():
            o = opts[idx[0]]
            draws = [self._draw(observations[i], o) for i in idx]
            inputs = {"z": z[idx], "state": torch.from_numpy(states[idx]).to(dev),
                      "state_mask": torch.from_numpy(state_masks[idx]).to(dev),
                      "action_mask": torch.from_numpy(action_masks[idx]).to(dev),
                      "noise": torch.stack([x for x, _ in draws]).to(dev)}
            if not o["use_ddim"]:
                inputs["step_noise"] = torch.cat([s for _, s in draws], dim=1).to(dev)
            out = self._run("denoise", inputs, o)
            for j, i in enumerate(idx):
                normalized[i] = out[j].double().cpu().numpy()
        return [action_outputs(self.normalizer, n, o["action_mask"], o["state"])
                for o, n in zip(observations, normalized, strict=True)]

    def _run(self, stage: str, inputs: dict[str, torch.Tensor], options: dict) -> torch.Tensor:
        """`model.<stage>(**inputs, **options)`, eager or through its CUDA graph for these shapes and options."""
        fn = getattr(self.model, stage)
        if not self.cuda_graphs:
            return fn(**inputs, **options)
        key = (stage, *options.items(), *((k, tuple(v.shape)) for k, v in inputs.items()))
        if key in self._graphs:
            self._graphs.move_to_end(key)
        else:
            if len(self._graphs) >= MAX_GRAPHS:
                self._graphs.popitem(last=False)
            self._graphs[key] = _Captured(fn, inputs, options)
        return self._graphs[key](inputs)

    def warmup(self, batch_sizes: Iterable[int] = (1,), **options: Any) -> dict[int, float]:
        """Runs a synthetic batch of each size (mid-grey image, both hands present, `options` or the sampling
        defaults) so that compilation, CUDA-graph capture and kernel autotuning happen now rather than on the first
        real request; returns the seconds each size took. Uses a fixed seed: torch's global generator is left
        as it was."""
        c = self.config
        obs = {"image": np.full((c.image_size, c.image_size, 3), 128, np.uint8), "instruction": "Left hand: None.",
               "state": np.zeros(c.state_dim), "state_mask": np.ones(c.state_dim),
               "action_mask": np.ones((c.chunk_len, c.action_dim)), "fov": np.deg2rad([60.0, 50.0]), "seed": 0,
               **options}
        seconds = {}
        for n in batch_sizes:
            t0 = time.perf_counter()
            self.predict_batch([obs] * n)
            seconds[n] = time.perf_counter() - t0
        return seconds
