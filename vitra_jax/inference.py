"""Host-side inference with the JAX policy: one raw observation in, action chunks and trajectories out (numpy).

`prepare_observation` turns an image, instruction, raw state, masks and FoV into a batch of one with the
training loader's helpers (bicubic squash to the VLM size, normalize-then-mask the state, §2.7);
`predict_action` runs the jitted VLM prefix and denoising loop of a `VitraPolicy`, then unnormalizes the
actions and integrates the trajectory. The model file keeps only models and pure functions.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vitra_jax.data import observation
from vitra_jax.handspace import layout
from vitra_jax.models.policy import PolicyConfig, VitraPolicy


def prepare_observation(cfg: PolicyConfig, image: np.ndarray, instruction: str, state: np.ndarray,
                        state_mask: np.ndarray, action_mask: np.ndarray, fov: np.ndarray, tokenizer: Any,
                        normalizer: Any) -> dict[str, np.ndarray]:
    """One observation as a batch of 1: image squashed to the VLM size in [-1, 1]; state normalized then
    masked (§2.7). Raises ValueError naming any input of the wrong shape."""
    n, a = cfg.dit.chunk_len, cfg.dit.action_dim
    checks = {"state": (state, (layout.STATE_DIM,)), "state_mask": (state_mask, (layout.STATE_DIM,)),
              "action_mask": (action_mask, (n, a)), "fov": (fov, (2,))}
    for name, (v, shape) in checks.items():
        if np.shape(v) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {np.shape(v)}")
    # the training loader prepares its batches with the same helpers (bicubic squash, normalize then mask)
    img = observation.model_image(image, cfg.vlm.image_size)
    tokens, mask = tokenizer.batch_encode([instruction], cfg.max_text_len)
    sm = np.asarray(state_mask, np.float32)
    norm_state = observation.normalized_state(normalizer, state, sm)
    return {"images": img[None], "tokens": np.asarray(tokens, np.int32), "input_mask": np.asarray(mask, bool),
            "fov": np.asarray(fov, np.float32)[None], "state": norm_state[None], "state_mask": sm[None],
            "action_mask": np.asarray(action_mask, np.float32)[None]}


@functools.lru_cache(maxsize=8)
def jitted(policy: VitraPolicy) -> tuple[Any, Any]:
    """(jitted `policy.cognition`, jitted `policy.denoise` with static sampling options), compiled once per
    policy object."""
    denoise = jax.jit(policy.denoise, static_argnames=("num_samples", "cfg_scale", "num_ddim_steps", "use_ddim"))
    return jax.jit(policy.cognition), denoise


def predict_action(policy: VitraPolicy, params: dict, image: np.ndarray, instruction: str, state: np.ndarray,
                   state_mask: np.ndarray, action_mask: np.ndarray, fov: np.ndarray, tokenizer: Any,
                   normalizer: Any, num_samples: int = 1, cfg_scale: float = 5.0, num_ddim_steps: int = 10,
                   use_ddim: bool = True, rng: jax.Array | None = None,
                   noise: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Action chunks for one observation: normalized (S, N, A), unnormalized actions (S, N, A) and the
    trajectory (S, N+1, 102) integrated from the (raw) state. `rng` defaults to key 0; `noise` (1, S, N, A)
    fixes x_T."""
    b = prepare_observation(policy.cfg, image, instruction, state, state_mask, action_mask, fov, tokenizer,
                            normalizer)
    rng = jax.random.key(0) if rng is None else rng
    cognition, denoise = jitted(policy)
    z = cognition(params, b["images"], b["tokens"], b["input_mask"], b["fov"])
    out = denoise(params, z, b["state"], b["state_mask"], b["action_mask"], rng,
                  noise=None if noise is None else jnp.asarray(noise, jnp.float32), num_samples=num_samples,
                  cfg_scale=float(cfg_scale), num_ddim_steps=num_ddim_steps, use_ddim=use_ddim)
    return observation.action_outputs(normalizer, np.asarray(out[0], np.float64), action_mask, state)
