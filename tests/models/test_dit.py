import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitra_jax.models.dit import DiT, DiTBlock, DiTConfig, QKNorm, timestep_embedding

CFG = DiTConfig(depth=2, width=32, num_heads=4, action_dim=102, state_dim=102, token_size=24, state_hidden=48,
                freq_dim=16)


_apply = jax.jit(lambda params, **kw: DiT(CFG).apply(params, **kw))
_init = jax.jit(lambda key, **kw: DiT(CFG).init(key, **kw))


def _inputs(b=2, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return dict(z=f(b, CFG.token_size), t=jnp.array([3, 70][:b]), x=f(b, 16, 102),
                action_mask=jnp.ones((b, 16, 102)), state=f(b, 102), state_mask=jnp.ones((b, 102)))


def _random_params(params, seed=1):
    """Every parameter random (zero-init AdaLN would otherwise make the output identically zero)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda l: jnp.asarray(0.2 * rng.normal(size=l.shape), jnp.float32), params)


def test_zero_init_blocks_are_identity_and_output_zero():
    x = jax.random.normal(jax.random.key(0), (2, 18, 32))
    c = jax.random.normal(jax.random.key(1), (2, 32))
    block = DiTBlock(CFG)
    p = jax.jit(block.init)(jax.random.key(2), x, c)
    y, _ = jax.jit(block.apply)(p, x, c)
    np.testing.assert_array_equal(y, x)
    inp = _inputs()
    params = _init(jax.random.key(0), **inp)
    np.testing.assert_array_equal(_apply(params, **inp), 0.0)


def test_causal_action_tokens():
    inp = _inputs()
    params = _random_params(_init(jax.random.key(0), **inp))
    out = _apply(params, **inp)
    assert out.shape == (2, 16, 102) and float(jnp.std(out)) > 1e-3
    for k in (0, 5, 15):
        x2 = inp["x"].at[:, k].add(1.0)
        out2 = _apply(params, **{**inp, "x": x2})
        np.testing.assert_array_equal(out2[:, :k], out[:, :k])
        assert float(jnp.abs(out2[:, k] - out[:, k]).max()) > 1e-4
    # The state token (position 1) influences every action output.
    out3 = _apply(params, **{**inp, "state": inp["state"] + 1.0})
    assert float(jnp.abs(out3[:, 0] - out[:, 0]).max()) > 1e-4


def test_masked_action_values_are_ignored_and_drop_uses_uncondition():
    inp = _inputs()
    params = _random_params(_init(jax.random.key(0), **inp))
    mask = jnp.ones((2, 16, 102)).at[:, :, :51].set(0)
    a = _apply(params, **{**inp, "action_mask": mask})
    b = _apply(params, **{**inp, "action_mask": mask, "x": inp["x"].at[:, :, :51].set(7.0)})
    np.testing.assert_array_equal(a, b)
    unc = params["params"]["uncondition"]
    dropped = _apply(params, **inp, drop=jnp.array([True, False]))
    manual = _apply(params, **{**inp, "z": inp["z"].at[0].set(unc)})
    np.testing.assert_allclose(dropped, manual, atol=1e-6)
    np.testing.assert_array_equal(dropped[1], _apply(params, **inp)[1])


def test_timestep_embedding_values():
    e = timestep_embedding(jnp.array([0, 7]), 8)
    freqs = np.exp(-math.log(10000) * np.arange(4) / 4)
    np.testing.assert_allclose(e[1], np.concatenate([np.cos(7 * freqs), np.sin(7 * freqs)]), rtol=1e-5)
    np.testing.assert_allclose(e[0], [1, 1, 1, 1, 0, 0, 0, 0])


def test_dit_b_parameter_count_official_layout():
    cfg = DiTConfig(action_dim=192, state_dim=212, token_size=2304)
    s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    shapes = jax.eval_shape(lambda *a: DiT(cfg).init(jax.random.key(0), *a), s(1, 2304),
                            jax.ShapeDtypeStruct((1,), jnp.int32), s(1, 16, 192), s(1, 16, 192), s(1, 212), s(1, 212))
    count = sum(x.size for x in jax.tree.leaves(shapes))
    assert count == 136_587_456  # ≈ 136.6M as released: 12 × 10.63M blocks + embedders and final layer
    blocks = sum(x.size for x in jax.tree.leaves(shapes["params"]["blocks"]))
    assert blocks == 12 * 10_628_480


def test_remat_gives_same_output():
    inp = _inputs()
    params = _random_params(_init(jax.random.key(0), **inp))
    out = jax.jit(lambda p: DiT(dataclasses.replace(CFG, remat=True)).apply(p, **inp))(params)
    np.testing.assert_allclose(out, _apply(params, **inp), atol=1e-6)


def test_initialisation_follows_the_release():
    """Embedders N(0, 0.02); block matmuls Xavier-uniform (std sqrt(2 / (fan_in + fan_out))); biases 0."""
    p = _init(jax.random.PRNGKey(0), **_inputs())["params"]
    for name in ("x_embedder_fc1", "x_embedder_fc2", "state_embedder_fc1", "state_embedder_fc2",
                 "state_embedder_fc3", "z_embedder", "t_embedder_fc1", "t_embedder_fc2"):
        k = np.asarray(p[name]["kernel"])
        assert abs(k.mean()) < 0.003 and abs(k.std() - 0.02) < 0.0025, (name, k.std())
        assert np.all(np.asarray(p[name]["bias"]) == 0)
    qkv = np.asarray(p["blocks"]["qkv"]["kernel"])  # (depth, 32, 96)
    want = math.sqrt(2 / (32 + 96))
    assert abs(qkv.std() - want) < 0.1 * want and np.abs(qkv).max() <= math.sqrt(3) * want + 1e-6


# ---- q/k norm: true RMS ("rms") or timm 0.9.10's RmsNorm ("timm_0_9_10", the release's) -------------------

CFG_TIMM = dataclasses.replace(CFG, qk_norm="timm_0_9_10")


def _timm_0_9_10_norm(x, w, eps=1e-6):
    """timm 0.9.10 `fast_norm.rms_norm`: x · rsqrt(unbiased variance of x + eps) · w; x is not centred."""
    return x / np.sqrt(np.var(x, axis=-1, ddof=1, keepdims=True) + eps) * w


def _true_rms_norm(x, w, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def test_qk_norm_timm_0_9_10_formula_and_it_differs_from_rms():
    rng = np.random.default_rng(0)
    # head dim 64 as DiT-B; a mean of 1–2σ per head vector, where the two norms differ most
    x = rng.normal(size=(2, 18, 4, 64)) + rng.uniform(1.0, 2.0, size=(2, 18, 4, 1))
    w = rng.uniform(0.5, 1.5, size=64)
    p = {"params": {"scale": jnp.asarray(w, jnp.float32)}}
    xj = jnp.asarray(x, jnp.float32)
    timm = np.asarray(QKNorm("timm_0_9_10").apply(p, xj))
    rms = np.asarray(QKNorm("rms").apply(p, xj))
    np.testing.assert_allclose(timm, _timm_0_9_10_norm(x, w), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(rms, _true_rms_norm(x, w), rtol=2e-5, atol=2e-6)
    # timm's output is larger by sqrt(mean(x²) / var(x)) ≈ sqrt(1 + mean²/σ²): ≥ 10 % everywhere here.
    ratio = np.abs(timm) / np.abs(rms)
    assert ratio.min() > 1.1, ratio.min()
    # torch.var (what timm calls) is unbiased by default: the numpy reference is the release's formula.
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x)
    want = (xt * torch.rsqrt(torch.var(xt, dim=-1, keepdim=True) + 1e-6) * torch.tensor(w)).numpy()
    np.testing.assert_allclose(_timm_0_9_10_norm(x, w), want, rtol=1e-12)


def test_unknown_qk_norm_is_refused():
    with pytest.raises(ValueError, match="unknown qk_norm 'layer'.*'rms', 'timm_0_9_10'"):
        DiTConfig(qk_norm="layer")
    with pytest.raises(ValueError, match="unknown qk_norm 'RMS'"):
        QKNorm("RMS").init(jax.random.key(0), jnp.ones((1, 2, 1, 8)))


def _block_params(seed=3):
    """Random DiTBlock params whose qkv bias gives q and k a clearly non-zero mean over the head dim."""
    x = jnp.zeros((2, 18, CFG.width))
    c = jnp.zeros((2, CFG.width))
    shapes = jax.eval_shape(DiTBlock(CFG).init, jax.random.key(0), x, c)["params"]
    rng = np.random.default_rng(seed)
    p = jax.tree.map(lambda l: 0.3 * rng.normal(size=l.shape), shapes)
    p["qkv"]["bias"] = p["qkv"]["bias"] + 1.0
    p["q_norm"]["scale"] = rng.uniform(0.5, 1.5, CFG.width // CFG.num_heads)
    p["k_norm"]["scale"] = rng.uniform(0.5, 1.5, CFG.width // CFG.num_heads)
    return p


def _reference_block(p, x, c, qk_norm):
    """One DiT block written out in float64: AdaLN-Zero, causal attention with q/k norm, tanh-GELU MLP."""
    dense = lambda v, name: v @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
    ln = lambda v: (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-6)  # noqa: E731
    b, t, d = x.shape
    h = CFG.num_heads
    k = d // h
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = np.split(dense(c / (1 + np.exp(-c)), "adaLN"), 6, -1)
    y = ln(x) * (1 + scale_a[:, None]) + shift_a[:, None]
    qkv = dense(y, "qkv").reshape(b, t, 3, h, k)
    q = qk_norm(qkv[:, :, 0], p["q_norm"]["scale"])
    kk = qk_norm(qkv[:, :, 1], p["k_norm"]["scale"])
    v = qkv[:, :, 2]
    out = np.zeros((b, t, h, k))
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):  # query ti attends to keys 0..ti
                s = np.array([q[bi, ti, hi] @ kk[bi, si, hi] for si in range(ti + 1)]) / math.sqrt(k)
                prob = np.exp(s - s.max())
                prob /= prob.sum()
                out[bi, ti, hi] = prob @ v[bi, : ti + 1, hi]
    x = x + gate_a[:, None] * dense(out.reshape(b, t, d), "proj")
    y = ln(x) * (1 + scale_m[:, None]) + shift_m[:, None]
    y = dense(y, "mlp_fc1")
    y = 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
    return x + gate_m[:, None] * dense(y, "mlp_fc2")


@pytest.mark.parametrize("cfg,ref_norm", [(CFG_TIMM, _timm_0_9_10_norm), (CFG, _true_rms_norm)])
def test_block_matches_written_out_reference(cfg, ref_norm):
    p = _block_params()
    rng = np.random.default_rng(4)
    x, c = rng.normal(size=(2, 18, CFG.width)), rng.normal(size=(2, CFG.width))
    pj = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), p)
    got, _ = jax.jit(DiTBlock(cfg).apply)({"params": pj}, jnp.asarray(x, jnp.float32), jnp.asarray(c, jnp.float32))
    want = _reference_block(p, x, c, ref_norm)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The other norm would not pass this comparison: the test tells the two apart.
    other = _true_rms_norm if ref_norm is _timm_0_9_10_norm else _timm_0_9_10_norm
    assert np.abs(_reference_block(p, x, c, other) - want).max() > 1e-2


def test_whole_dit_same_params_either_norm_and_outputs_differ():
    inp = _inputs()
    params = _init(jax.random.key(0), **inp)
    timm_shapes = jax.eval_shape(lambda k: DiT(CFG_TIMM).init(k, **inp), jax.random.key(0))
    assert jax.tree.map(lambda l: l.shape, timm_shapes) == jax.tree.map(lambda l: l.shape, params)
    params = _random_params(params)
    bias = params["params"]["blocks"]["qkv"]["bias"]
    params["params"]["blocks"]["qkv"]["bias"] = bias + 1.0  # q/k with non-zero mean over the head dim
    rms = _apply(params, **inp)
    timm = jax.jit(lambda p: DiT(CFG_TIMM).apply(p, **inp))(params)
    # float32 noise between two runs of one option is ~1e-6 (test_remat_gives_same_output)
    assert float(jnp.abs(timm - rms).max()) > 1e-3
