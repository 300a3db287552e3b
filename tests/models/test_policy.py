
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial.transform import Rotation

from vitra_jax import inference
from vitra_jax.handspace.normalize import GaussianNormalizer
from vitra_jax.handspace.trajectory import integrate_actions
from vitra_jax.models import diffusion
from vitra_jax.models.policy import (FovEncoder, VitraPolicy, fake_batch, init_cognition_from_embedding,
                                     policy_config)
from vitra_jax.tokenizer import Tokenizer, train_sentencepiece

CFG = policy_config("tiny")
POLICY = VitraPolicy(CFG)


@pytest.fixture(scope="module")
def init_params():
    return jax.jit(POLICY.init)(jax.random.key(0))


@pytest.fixture(scope="module")
def params(init_params):
    p = init_params
    # Random DiT weights: the zero-initialised output layer would make every sample equal the noise schedule.
    rng = np.random.default_rng(1)
    head = jax.tree.map(lambda l: jnp.asarray(0.1 * rng.normal(size=l.shape), jnp.float32), p["action_model"])
    return {**p, "action_model": head}


@pytest.fixture(scope="module")
def batch():
    return fake_batch(CFG, 2)


_loss = jax.jit(POLICY.loss)
_sample = jax.jit(POLICY.sample, static_argnames=("num_samples", "cfg_scale", "num_ddim_steps", "use_ddim"))


def test_loss_ignores_masked_action_dims(params, batch):
    mask = batch["action_mask"].copy()
    mask[0, :, :51] = 0
    mask[1, 8:] = 0
    b = {**batch, "action_mask": mask}
    total, parts = _loss(params, b, jax.random.key(3))
    changed = {**b, "actions": np.where(mask > 0, b["actions"], 100.0).astype(np.float32)}
    total2, _ = _loss(params, changed, jax.random.key(3))
    assert float(total) == float(total2) and np.isfinite(float(total)) and float(total) > 0
    assert set(parts) == {"left_wrist", "left_fingers", "right_wrist", "right_fingers"}


def test_tiny_policy_overfits_fixed_batch(init_params, batch):
    """Fixed batch and fixed (t, ε, dropout) draws: adam drives the ε-loss down ≥ 10×."""
    params = init_params
    opt = optax.adam(3e-3)
    state = opt.init(params)
    key = jax.random.key(7)

    @jax.jit
    def step(params, state):
        (loss, _), g = jax.value_and_grad(POLICY.loss, has_aux=True)(params, batch, key)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss

    losses = []
    for _ in range(40):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    print("overfit losses", losses[::5], losses[-1])
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


_eps = jax.jit(POLICY._eps)
_cognition = jax.jit(POLICY.cognition)
_ddim_step = jax.jit(lambda x, e, t, t_prev: diffusion.ddim_step(POLICY.schedule, x, e, t, t_prev))


def _manual_ddim(params, batch, noise, scale):
    """Reference DDIM loop in Python with explicit conditional / unconditional DiT calls."""
    z = _cognition(params, batch["images"], batch["tokens"], batch["input_mask"], batch["fov"])
    x = jnp.asarray(noise[:, 0])
    ts = list(diffusion.ddim_timesteps(100, 10))[::-1]
    for i, t in enumerate(ts):
        tt = jnp.full((x.shape[0],), t)
        args = (z, tt, x, batch["action_mask"], batch["state"], batch["state_mask"])
        e = _eps(params, *args, jnp.zeros(x.shape[0], bool))
        if scale != 1.0:
            e_u = _eps(params, *args, jnp.ones(x.shape[0], bool))
            e = e_u + scale * (e - e_u)
        x = _ddim_step(x, e, jnp.int32(t), jnp.int32(ts[i + 1] if i + 1 < len(ts) else -1))
    return x * batch["action_mask"]


def test_ddim_fixed_noise_deterministic_and_cfg(params, batch):
    noise = np.random.default_rng(0).normal(size=(2, 1, 16, 102)).astype(np.float32)
    a = _sample(params, batch, jax.random.key(0), noise=noise, cfg_scale=5.0)
    b = _sample(params, batch, jax.random.key(99), noise=noise, cfg_scale=5.0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[:, 0], _manual_ddim(params, batch, noise, 5.0), atol=1e-4)
    c1 = _sample(params, batch, jax.random.key(0), noise=noise, cfg_scale=1.0)
    np.testing.assert_allclose(c1[:, 0], _manual_ddim(params, batch, noise, 1.0), atol=1e-4)
    assert float(jnp.abs(c1 - a).max()) > 1e-3  # guidance matters with these weights


def test_ddpm_and_multiple_samples(params, batch):
    out = _sample(params, batch, jax.random.key(1), num_samples=3, cfg_scale=1.0, use_ddim=False)
    assert out.shape == (2, 3, 16, 102) and np.all(np.isfinite(out))
    assert float(jnp.abs(out[:, 0] - out[:, 1]).max()) > 1e-3  # independent noise per sample


def _cosine_ddpm_schedule(steps=100):
    """squaredcos_cap_v2 (§2.5): ᾱ(t) = cos²((t/T + 0.008)/1.008 · π/2), β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999)."""
    abar = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - abar((i + 1) / steps) / abar(i / steps), 0.999) for i in range(steps)]
    alphas_cumprod = []
    prod = 1.0
    for b in betas:
        prod *= 1 - b
        alphas_cumprod.append(prod)
    return betas, alphas_cumprod


def _reference_ddpm(params, batch, mask, x_T, scale, step_noise):
    """IDDPM's p_sample loop written out in float64: x̂0 from ε, the posterior mean of q(x_{t-1} | x_t, x̂0),
    the fixed-small variance, no noise at t = 0; CFG as two explicit DiT calls. `step_noise(i, shape)`."""
    betas, abar = _cosine_ddpm_schedule(100)
    b, s = x_T.shape[:2]
    rep = lambda v: np.repeat(np.asarray(v), s, axis=0)  # noqa: E731  sample-major, as x_T.reshape(b * s, ...)
    z = rep(_cognition(params, batch["images"], batch["tokens"], batch["input_mask"], batch["fov"]))
    cond = (rep(mask), rep(batch["state"]), rep(batch["state_mask"]))
    x = x_T.reshape(b * s, 16, 102).astype(np.float64)
    for i in range(100):
        t = 99 - i
        args = (z, jnp.full((b * s,), t), jnp.asarray(x, jnp.float32), *cond)
        e_c, e_u = (np.asarray(_eps(params, *args, jnp.full(b * s, drop)), np.float64) for drop in (False, True))
        eps = e_u + scale * (e_c - e_u)
        a_bar, a_bar_prev = abar[t], abar[t - 1] if t > 0 else 1.0
        x0 = x / math.sqrt(a_bar) - math.sqrt(1 / a_bar - 1) * eps
        mean = (betas[t] * math.sqrt(a_bar_prev) / (1 - a_bar) * x0
                + (1 - a_bar_prev) * math.sqrt(1 - betas[t]) / (1 - a_bar) * x)
        var = betas[t] * (1 - a_bar_prev) / (1 - a_bar)
        x = mean + (math.sqrt(var) * step_noise(i, x.shape) if t > 0 else 0.0)
    return (x * cond[0]).reshape(x_T.shape)


def test_ddpm_sampling_matches_a_reference_loop(params, batch):
    scale, s = 3.0, 2
    x_T = np.random.default_rng(2).normal(size=(2, s, 16, 102)).astype(np.float32)
    mask = batch["action_mask"].copy()
    mask[0, :, :51] = 0
    mask[1, 12:] = 0
    key = jax.random.key(11)
    got = np.asarray(_sample(params, {**batch, "action_mask": mask}, key, noise=x_T, num_samples=s,
                             cfg_scale=scale, use_ddim=False))
    step_key = jax.random.split(key)[0]  # denoise splits off the key of x_T first, then folds in the step index
    ours_noise = lambda i, shape: np.asarray(jax.random.normal(jax.random.fold_in(step_key, i), shape))  # noqa: E731
    want = _reference_ddpm(params, batch, mask, x_T, scale, ours_noise)
    # An untrained ε̂ leaves x_0 ≈ x_T / sqrt(ᾱ_99) (~10³): compare relative to each sample's size.
    size = np.abs(want).max(axis=(2, 3), keepdims=True)
    err = np.abs(got - want) / size
    # Other per-step noise moves the result by far more than the tolerance: the noise is reproduced, not ignored.
    other_key = jax.random.key(12)
    other = _reference_ddpm(params, batch, mask, x_T, scale,
                            lambda i, shape: np.asarray(jax.random.normal(jax.random.fold_in(other_key, i), shape)))
    noise_effect = np.abs(other - want) / size
    print(f"DDPM: max |x_0| {size.max():.0f}, relative error {err.max():.1e}, other noise {noise_effect.max():.1e}")
    tol = 5e-5  # observed: 5e-6
    assert err.max() < tol and noise_effect.max() > 100 * tol
    assert np.all(got[0, :, :, :51] == 0) and np.all(got[1, :, 12:] == 0)


def test_cognition_init(params):
    p2 = init_cognition_from_embedding(params)
    np.testing.assert_array_equal(p2["cognition_token"], params["vlm"]["llm"]["embedder"]["input_embedding"][10])


def test_fov_encoder_full_size_count():
    shapes = jax.eval_shape(FovEncoder(2304).init, jax.random.key(0), jax.ShapeDtypeStruct((1, 2), jnp.float32))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == 5_317_632  # ≈ 5.3M as released


@pytest.fixture(scope="module")
def observation(tmp_path_factory):
    """A tokenizer, a random normalizer and one observation whose left hand is absent."""
    texts = ["Left hand: None. Right hand: Pick up the red cup.", "Left hand: Hold the bowl. Right hand: None."] * 20
    tok = Tokenizer(train_sentencepiece(texts, tmp_path_factory.mktemp("spm"), vocab_size=300))
    rng = np.random.default_rng(0)
    norm = GaussianNormalizer(rng.normal(size=102), rng.uniform(0.5, 2, 102), rng.normal(size=102),
                              rng.uniform(0.5, 2, 102))
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    state = rng.normal(size=102)
    state_mask = np.ones(102)
    state_mask[:51] = 0
    action_mask = np.ones((16, 102))
    action_mask[:, :51] = 0
    return dict(image=image, instruction=texts[0], state=state, state_mask=state_mask, action_mask=action_mask,
                fov=np.deg2rad([60.0, 45.0]), tokenizer=tok, normalizer=norm)


def test_predict_action(params, observation):
    o = observation
    tok, norm, image, state, state_mask, action_mask = (o[k] for k in ("tokenizer", "normalizer", "image", "state",
                                                                         "state_mask", "action_mask"))
    args = (POLICY, params, image, o["instruction"], state, state_mask, action_mask, o["fov"], tok, norm)
    out = inference.predict_action(*args, num_samples=2)
    assert out["normalized"].shape == (2, 16, 102) and out["trajectory"].shape == (2, 17, 102)
    np.testing.assert_allclose(out["actions"], norm.unnormalize_action(out["normalized"]) * action_mask)
    np.testing.assert_array_equal(out["normalized"][..., :51], 0.0)
    np.testing.assert_allclose(out["trajectory"][:, 0], np.broadcast_to(state, (2, 102)))
    obs = inference.prepare_observation(CFG, image, o["instruction"], state, state_mask, action_mask, np.zeros(2),
                                        tok, norm)
    np.testing.assert_allclose(obs["state"][0], norm.normalize_state(state) * state_mask, rtol=1e-6)
    assert obs["images"].shape == (1, CFG.vlm.image_size, CFG.vlm.image_size, 3)
    assert obs["images"].min() >= -1 and obs["images"].max() <= 1
    with pytest.raises(ValueError, match="state must have shape"):
        inference.predict_action(POLICY, params, image, o["instruction"], state[:50], *args[5:])


def test_predict_action_trajectory_integrates_its_unnormalized_actions(params, observation):
    """actions = (normalized · (σ + 1e-7) + μ) · mask (§2.7) and the trajectory integrates them from the raw
    state: positions add Δt, orientations compose R_{k+1} = R_Δ · R_k (scipy Euler 'xyz'), fingers are θ."""
    o = observation
    norm, state, mask = o["normalizer"], o["state"], o["action_mask"]
    out = inference.predict_action(POLICY, params, o["image"], o["instruction"], state, o["state_mask"], mask,
                                   o["fov"], o["tokenizer"], norm, num_samples=2, rng=jax.random.key(5))
    want = (out["normalized"] * (norm.action_std + 1e-7) + norm.action_mean) * mask
    np.testing.assert_allclose(out["actions"], want, rtol=1e-12, atol=1e-12)
    assert np.abs(out["actions"][..., 51:]).min() > 0 and np.all(out["actions"][..., :51] == 0)
    for actions, traj in zip(out["actions"], out["trajectory"], strict=True):
        np.testing.assert_allclose(traj, integrate_actions(state, actions), atol=1e-12)
        for h in (0, 51):  # left, right: [Δt 3 | Δr 3 | θ 45]
            tr, rot, fin = slice(h, h + 3), slice(h + 3, h + 6), slice(h + 6, h + 51)
            np.testing.assert_allclose(traj[1:, tr], state[tr] + np.cumsum(actions[:, tr], axis=0), atol=1e-12)
            np.testing.assert_allclose(traj[1:, fin], actions[:, fin], atol=1e-12)
            r = Rotation.from_euler("xyz", state[rot])
            for k in range(16):
                r = Rotation.from_euler("xyz", actions[k, rot]) * r
                np.testing.assert_allclose(Rotation.from_euler("xyz", traj[k + 1, rot]).as_matrix(), r.as_matrix(),
                                           atol=1e-9)
    # the absent left hand's wrist stays where the state puts it
    np.testing.assert_allclose(out["trajectory"][:, :, :6], np.broadcast_to(state[:6], (2, 17, 6)), atol=1e-12)
