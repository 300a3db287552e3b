import math

import jax.numpy as jnp
import numpy as np

from vitra_jax.handspace import layout
from vitra_jax.models import diffusion


def test_cosine_schedule_closed_form():
    s = diffusion.cosine_schedule(100)
    f = lambda t: math.cos((t / 100 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    expected = np.array([f(t + 1) / f(0) for t in range(99)])
    np.testing.assert_allclose(s.alphas_cumprod[:99], expected, rtol=1e-10)
    assert s.betas[-1] == 0.999  # 1 − ᾱ(T)/ᾱ(T−1) = 1 is capped
    assert np.all(np.diff(s.alphas_cumprod) < 0)
    np.testing.assert_allclose(s.alphas_cumprod[0], 1 - s.betas[0])


def test_ddim_timesteps_respacing():
    np.testing.assert_array_equal(diffusion.ddim_timesteps(100, 10), np.arange(0, 100, 10))
    np.testing.assert_array_equal(diffusion.ddim_timesteps(100, 3), [0, 34, 68])
    assert len(diffusion.ddim_timesteps(100, 100)) == 100


def test_q_sample_and_ddim_invert_exactly():
    s = diffusion.cosine_schedule(100)
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.normal(size=(3, 16, 102)), jnp.float32)
    eps = jnp.asarray(rng.normal(size=(3, 16, 102)), jnp.float32)
    t = jnp.array([0, 50, 99])
    xt = diffusion.q_sample(s, x0, t, eps)
    ab = s.alphas_cumprod[np.array([0, 50, 99])][:, None, None]
    np.testing.assert_allclose(xt, np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps, rtol=1e-5, atol=1e-6)
    # With the true noise a DDIM jump to t = -1 (clean) returns x0, and a DDPM step at t = 0 too.
    for i in range(3):
        back = diffusion.ddim_step(s, xt[i], eps[i], t[i], jnp.int32(-1))
        np.testing.assert_allclose(back, x0[i], atol=2e-3 if i == 2 else 1e-4)
    np.testing.assert_allclose(diffusion.ddpm_step(s, xt[0], eps[0], jnp.int32(0), eps[0]), x0[0], atol=1e-4)


def test_ddpm_step_matches_posterior():
    s = diffusion.cosine_schedule(100)
    rng = np.random.default_rng(1)
    x0, eps, z = (rng.normal(size=(16, 102)) for _ in range(3))
    t = 40
    ab, ab_prev, b = s.alphas_cumprod[t], s.alphas_cumprod[t - 1], s.betas[t]
    xt = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    mean = np.sqrt(ab_prev) * b / (1 - ab) * x0 + np.sqrt(1 - b) * (1 - ab_prev) / (1 - ab) * xt
    var = b * (1 - ab_prev) / (1 - ab)
    got = diffusion.ddpm_step(s, jnp.asarray(xt, jnp.float32), jnp.asarray(eps, jnp.float32), jnp.int32(t),
                              jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(got, mean + np.sqrt(var) * z, rtol=1e-4, atol=1e-4)


def _reference_loss(pred, eps, mask, weights):
    total, count_sum = 0.0, 0.0
    for sl, kind in layout.LOSS_COMPONENTS.values():
        m = mask[..., sl]
        loss = weights[kind] * ((pred[..., sl] - eps[..., sl]) ** 2 * m).sum() / max(m.sum(), 1)
        count = mask[..., sl.start].sum()
        total += loss * count
        count_sum += count
    return total / count_sum


def test_masked_component_loss_weights_and_mask():
    rng = np.random.default_rng(0)
    pred, eps = rng.normal(size=(2, 2, 16, 102)).astype(np.float32)
    mask = np.ones((2, 16, 102), np.float32)
    mask[0, :, :51] = 0  # left hand missing in sample 0
    mask[1, 10:] = 0  # chunk ends early in sample 1
    weights = layout.ROBOT_LOSS_WEIGHTS
    total, parts = diffusion.masked_component_loss(jnp.asarray(pred), jnp.asarray(eps), jnp.asarray(mask), weights)
    np.testing.assert_allclose(total, _reference_loss(pred, eps, mask, weights), rtol=1e-5)
    sl = layout.LOSS_COMPONENTS["right_fingers"][0]
    m = mask[..., sl]
    np.testing.assert_allclose(parts["right_fingers"], 0.4 * ((pred[..., sl] - eps[..., sl]) ** 2 * m).sum() / m.sum(),
                               rtol=1e-5)
    # Anything at masked positions leaves the loss unchanged.
    pred2 = np.where(mask > 0, pred, 1e3)
    total2, _ = diffusion.masked_component_loss(jnp.asarray(pred2), jnp.asarray(eps), jnp.asarray(mask), weights)
    assert float(total2) == float(total)


def test_parts_normalised_by_the_whole_batch_counts_add_up_to_the_whole_batch_loss():
    rng = np.random.default_rng(2)
    pred, eps = rng.normal(size=(2, 4, 16, 102)).astype(np.float32)
    pred[1] *= 3  # the rows' errors differ, so own-count normalisation would weigh them wrongly
    mask = np.ones((4, 16, 102), np.float32)
    mask[0, :, :51] = 0
    mask[1, 4:] = 0
    mask[3, 9:, 51:] = 0
    weights = layout.ROBOT_LOSS_WEIGHTS
    whole = _reference_loss(pred, eps, mask, weights)
    counts = diffusion.component_counts(jnp.asarray(mask))
    halves = [np.r_[0, 2], np.r_[1, 3]]
    shares = [diffusion.masked_component_loss(jnp.asarray(pred[h]), jnp.asarray(eps[h]), jnp.asarray(mask[h]),
                                              weights, counts) for h in halves]
    np.testing.assert_allclose(sum(float(t) for t, _ in shares), whole, rtol=1e-5)
    _, parts = diffusion.masked_component_loss(jnp.asarray(pred), jnp.asarray(eps), jnp.asarray(mask), weights)
    for name in parts:
        np.testing.assert_allclose(sum(float(p[name]) for _, p in shares), float(parts[name]), rtol=1e-5)
    own = np.mean([_reference_loss(pred[h], eps[h], mask[h], weights) for h in halves])
    assert abs(own - whole) > 0.05 * whole
