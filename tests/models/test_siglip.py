"""SigLIP encoder: big_vision layout, scan == per-layer loop, remat and bf16 options."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vitra_jax.models.siglip import EncoderBlock, SiglipConfig, SiglipEncoder

CFG = SiglipConfig(width=32, depth=3, mlp_dim=64, num_heads=2, patch_size=8, image_size=32)


def init(model, x):
    return jax.jit(model.init)(jax.random.key(0), x)["params"]


def test_scan_matches_layer_loop():
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
    model = SiglipEncoder(CFG)
    params = init(model, x)
    assert params["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_0"]["kernel"].shape == (3, 32, 64)
    assert params["Transformer"]["encoderblock"]["MultiHeadDotProductAttention_0"]["query"]["kernel"].shape == (3, 32, 2, 16)
    out = jax.jit(model.apply)({"params": params}, x)
    # Same computation written by hand: patchify, add pos-emb, run each layer's slice, final LayerNorm.
    patches = x.reshape(2, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5).reshape(2, 16, 192)
    k = params["embedding"]["kernel"].reshape(192, 32)
    h = patches @ k + params["embedding"]["bias"] + params["pos_embedding"]
    block = EncoderBlock(CFG, "float32")
    for i in range(CFG.depth):
        layer = jax.tree.map(lambda a, i=i: a[i], params["Transformer"]["encoderblock"])
        h, _ = jax.jit(block.apply)({"params": layer}, h)
    norm = params["Transformer"]["encoder_norm"]
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    ref = (h - mu) / jnp.sqrt(var + 1e-6) * norm["scale"] + norm["bias"]
    np.testing.assert_allclose(out, ref, atol=2e-5)
    assert float(jnp.abs(out).mean()) > 0.1


def test_remat_and_bf16_and_head():
    x = jax.random.uniform(jax.random.key(2), (1, 32, 32, 3), minval=-1, maxval=1)
    params = init(SiglipEncoder(CFG, num_classes=48), x)
    assert params["head"]["kernel"].shape == (32, 48)
    ref = jax.jit(SiglipEncoder(CFG, num_classes=48).apply)({"params": params}, x)
    remat = jax.jit(SiglipEncoder(CFG, num_classes=48, remat="nothing_saveable").apply)({"params": params}, x)
    np.testing.assert_allclose(remat, ref, atol=1e-6)
    bf16 = jax.jit(SiglipEncoder(CFG, num_classes=48, dtype="bfloat16").apply)({"params": params}, x)
    assert bf16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf16, np.float32), ref, atol=0.1 * float(jnp.abs(ref).max()))
    assert ref.shape == (1, 16, 48) and dataclasses.replace(CFG, image_size=64).num_patches == 64
