"""Latency of one `predict_action` call (random weights), split into VLM prefix and denoising loop.

    python -m vitra_jax.benchmarks.policy [--variant=tiny|3b] [--dtype=float32|bfloat16] [--steps=10]
        [--cfg_scale=5.0] [--samples=1] [--repeats=20]

The prefix (SigLIP + Gemma-2 over image, text, FoV and cognition tokens) runs once per call; the DDIM loop
(with classifier-free guidance when cfg_scale > 1) is one jitted `lax.fori_loop`. Host work (resize,
tokenizing, unnormalizing, trajectory integration) is the remainder of the end-to-end time. Prints one table
of medians after a warm-up call (compilation excluded).
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from vitra_jax import inference
from vitra_jax.handspace import layout
from vitra_jax.handspace.normalize import GaussianNormalizer
from vitra_jax.models.policy import VitraPolicy, policy_config
from vitra_jax.tokenizer import Tokenizer, train_sentencepiece

_VARIANT = flags.DEFINE_enum("variant", "tiny", ["tiny", "3b"], "Policy size.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute and parameter dtype.")
_STEPS = flags.DEFINE_integer("steps", 10, "DDIM steps.")
_CFG = flags.DEFINE_float("cfg_scale", 5.0, "Classifier-free guidance scale (<= 1 skips the uncond branch).")
_SAMPLES = flags.DEFINE_integer("samples", 1, "Action samples per observation.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls.")

INSTRUCTION = "Left hand: None. Right hand: Pick up the red cup and put it on the plate."


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(_):
    cfg = policy_config(_VARIANT.value)
    dt = _DTYPE.value
    cfg = dataclasses.replace(cfg, vlm=dataclasses.replace(cfg.vlm, dtype=dt), dit=dataclasses.replace(cfg.dit, dtype=dt))
    policy = VitraPolicy(cfg)
    params = jax.jit(policy.init)(jax.random.key(0))
    params = jax.tree.map(lambda x: x.astype(dt), params)
    with tempfile.TemporaryDirectory() as tmp:
        tok = Tokenizer(train_sentencepiece([INSTRUCTION] * 20, tmp, vocab_size=300))
    norm = GaussianNormalizer.identity()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (224, 298, 3), dtype=np.uint8)
    state, state_mask = rng.normal(size=layout.STATE_DIM), np.ones(layout.STATE_DIM)
    action_mask, fov = np.ones((cfg.dit.chunk_len, cfg.dit.action_dim)), np.deg2rad([60.0, 60.0])
    kw = dict(num_samples=_SAMPLES.value, cfg_scale=_CFG.value, num_ddim_steps=_STEPS.value)

    obs = inference.prepare_observation(cfg, image, INSTRUCTION, state, state_mask, action_mask, fov, tok, norm)
    obs = {k: jnp.asarray(v) for k, v in obs.items()}
    key = jax.random.key(1)
    cognition, denoise = inference.jitted(policy)
    z = cognition(params, obs["images"], obs["tokens"], obs["input_mask"], obs["fov"])
    prefix = _median_ms(lambda: cognition(params, obs["images"], obs["tokens"], obs["input_mask"],
                                          obs["fov"]).block_until_ready(), _REPEATS.value)
    loop = _median_ms(lambda: denoise(params, z, obs["state"], obs["state_mask"], obs["action_mask"],
                                      key, **kw).block_until_ready(), _REPEATS.value)
    total = _median_ms(lambda: inference.predict_action(policy, params, image, INSTRUCTION, state, state_mask,
                                                        action_mask, fov, tok, norm, rng=key, **kw), _REPEATS.value)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"device={jax.devices()[0].device_kind} variant={_VARIANT.value} dtype={dt} params={n_params / 1e6:.1f}M "
          f"ddim_steps={_STEPS.value} cfg_scale={_CFG.value} samples={_SAMPLES.value}")
    print(f"{'part':<24}{'median ms':>12}")
    for name, ms in (("VLM prefix", prefix), ("denoising loop", loop), ("host + dispatch", total - prefix - loop),
                     ("predict_action total", total)):
        print(f"{name:<24}{ms:>12.2f}")


if __name__ == "__main__":
    app.run(main)
