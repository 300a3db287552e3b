"""Gemma-2 pieces: RoPE, RMSNorm, the sliding/prefix masks and alternating layers."""

import jax
import jax.numpy as jnp
import numpy as np

from vitra_jax.models.gemma2 import RMSNorm, apply_rope
from vitra_jax.models.paligemma import prefix_lm_masks


def test_rope_rotates_half_pairs():
    x = jax.random.normal(jax.random.key(0), (1, 3, 1, 8))
    pos = jnp.array([[0, 1, 5]])
    y = np.asarray(apply_rope(x, pos, 10_000.0))
    np.testing.assert_allclose(y[0, 0], x[0, 0], atol=1e-7)  # position 0 is the identity
    freq = 10_000.0 ** (-np.arange(4) * 2 / 8)
    a = 5 * freq
    x5 = np.asarray(x[0, 2, 0])
    ref = np.concatenate([x5[:4] * np.cos(a) - x5[4:] * np.sin(a), x5[4:] * np.cos(a) + x5[:4] * np.sin(a)])
    np.testing.assert_allclose(y[0, 2, 0], ref, rtol=1e-5)
    # Relative: <q_m, k_n> depends on m - n only.
    q, k = jax.random.normal(jax.random.key(1), (2, 1, 1, 1, 8))
    dot = lambda m, n: float((apply_rope(q, jnp.array([[m]]), 1e4) * apply_rope(k, jnp.array([[n]]), 1e4)).sum())
    assert abs(dot(7, 3) - dot(14, 10)) < 1e-4


def test_rmsnorm_uses_one_plus_scale():
    x = jnp.array([[3.0, 4.0]])
    y = RMSNorm(eps=0.0).apply({"params": {"scale": jnp.array([1.0, -0.5])}}, x)
    rms = np.sqrt(12.5)
    np.testing.assert_allclose(y, [[3 / rms * 2, 4 / rms * 0.5]], rtol=1e-6)


def test_masks_prefix_suffix_window_padding_extras():
    # 3 prefix tokens, 3 suffix tokens, 1 padding, 1 extra; window 2.
    valid = jnp.array([[1, 1, 1, 1, 1, 1, 0, 1]], bool)
    ar = jnp.array([[0, 0, 0, 1, 1, 1, 1, 0]])
    extra = jnp.array([[0, 0, 0, 0, 0, 0, 0, 1]], bool)
    pos = jnp.cumsum(valid, -1) - 1
    full, sliding = (np.asarray(m[0]).astype(int) for m in prefix_lm_masks(valid, ar, extra, pos, 2))
    expect_full = np.array([
        [1, 1, 1, 0, 0, 0, 0, 1],
        [1, 1, 1, 0, 0, 0, 0, 1],
        [1, 1, 1, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 0, 1],
        [1, 1, 1, 1, 1, 1, 0, 1],  # padding query: causal rows are harmless, padded key always hidden
        [1, 1, 1, 1, 1, 1, 0, 1]])
    np.testing.assert_array_equal(full, expect_full)
    expect_sliding = expect_full.copy()
    expect_sliding[3, :2] = 0  # suffix token at position 3 sees only positions 2, 3 (and the extra)
    expect_sliding[4, :3] = 0
    expect_sliding[5, :4] = 0
    expect_sliding[6, :4] = 0  # padding query shares position 5
    np.testing.assert_array_equal(sliding, expect_sliding)
