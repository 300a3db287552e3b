import math

import jax
import jax.numpy as jnp
import numpy as np

from vitra_jax.models.dit import DiT, DiTBlock, DiTConfig, timestep_embedding

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
    import dataclasses
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
