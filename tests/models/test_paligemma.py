"""PaliGemma forward contract: padding, prefix/suffix, extras, logits switch, bf16, full-size count."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.factories import hf_config, tiny_config, tiny_inputs
from vitra_jax.models.paligemma import PaliGemma, paligemma_config
from vitra_jax.weights import names


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_config()
    images, tokens, mask = tiny_inputs(cfg, length=12)
    params = jax.jit(PaliGemma(cfg).init)(jax.random.key(0), images, tokens, mask)["params"]
    return cfg, params, images, tokens, mask


@functools.cache
def forward(cfg, return_logits=True):
    return jax.jit(lambda p, *a, **kw: PaliGemma(cfg).apply({"params": p}, *a, return_logits=return_logits, **kw))


def run(cfg, params, *args, return_logits=True, **kw):
    return forward(cfg, return_logits)(params, *args, **kw)


def test_padding_and_extras_positions(setup):
    cfg, params, images, tokens, mask = setup
    extras = jax.random.normal(jax.random.key(3), (2, 4, cfg.llm.width)) * 0.1
    out = run(cfg, params, images, tokens, mask, extra_embeds=extras)
    n, n_valid = cfg.num_image_tokens, int(mask[1].sum())
    # Row 1 without its padding: identical outputs on the valid text and on the extras.
    short = run(cfg, params, images[1:], tokens[1:, :n_valid], mask[1:, :n_valid], extra_embeds=extras[1:])
    np.testing.assert_allclose(out.hidden[1, : n + n_valid], short.hidden[0, : n + n_valid], atol=1e-5)
    np.testing.assert_allclose(out.hidden[1, -4:], short.hidden[0, -4:], atol=1e-5)
    assert out.logits.shape == (2, n + 12 + 4, cfg.llm.vocab_size)
    assert float(jnp.abs(out.logits).max()) <= cfg.llm.final_softcap
    no_logits = run(cfg, params, images, tokens, mask, extra_embeds=extras, return_logits=False)
    assert no_logits.logits is None
    np.testing.assert_array_equal(no_logits.hidden, out.hidden)
    raw = PaliGemma(cfg).apply({"params": params}, tokens, method=PaliGemma.embed_tokens)
    np.testing.assert_array_equal(raw, params["llm"]["embedder"]["input_embedding"][tokens])


def test_suffix_is_causal_prefix_is_not(setup):
    cfg, params, images, tokens, mask = setup
    mask = np.ones_like(mask)
    mask_ar = np.zeros_like(tokens)
    mask_ar[:, 8:] = 1
    changed = tokens.copy()
    changed[:, 10] = (tokens[:, 10] + 1) % cfg.llm.vocab_size
    a = run(cfg, params, images, tokens, mask, mask_ar).hidden
    b = run(cfg, params, images, changed, mask, mask_ar).hidden
    n = cfg.num_image_tokens
    np.testing.assert_array_equal(a[:, : n + 10], b[:, : n + 10])  # prefix and earlier suffix unaffected
    assert float(jnp.abs(a[:, n + 10:] - b[:, n + 10:]).max()) > 1e-3
    c = run(cfg, params, images, changed, mask).hidden  # all-prefix: everything sees token 10
    assert float(jnp.abs(c[:, :n] - a[:, :n]).max()) > 1e-3


def test_bf16_and_remat_close_to_fp32(setup):
    cfg, params, images, tokens, mask = setup
    ref = run(cfg, params, images, tokens, mask).logits
    remat = run(dataclasses.replace(cfg, remat_policy="nothing_saveable"), params, images, tokens, mask).logits
    np.testing.assert_allclose(remat, ref, atol=1e-5)
    bf16 = run(dataclasses.replace(cfg, dtype="bfloat16"), params, images, tokens, mask)
    assert bf16.hidden.dtype == jnp.bfloat16 and bf16.logits.dtype == jnp.float32
    assert float(jnp.abs(bf16.logits - ref).max()) < 0.1 * float(jnp.abs(ref).max())


def test_full_size_param_count_matches_hf():
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    cfg = paligemma_config("3b-224")
    ours = sum(int(np.prod(s)) for s in names.expected_shapes(cfg).values())
    with torch.device("meta"):
        model = PaliGemmaForConditionalGeneration(hf_config(cfg))
    theirs = sum(p.numel() for p in model.parameters())  # lm_head is tied, counted once
    assert ours == theirs
    assert 3.0e9 < ours < 3.1e9
