"""Our JAX PaliGemma-2 against HF transformers with the same tiny random weights (fp32, CPU)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from tests.factories import save_tiny_hf, tiny_inputs
from vitra_jax.models.paligemma import PaliGemma
from vitra_jax.weights import hf as hf_weights


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_tiny_hf(tmp_path_factory.mktemp("hf") / "tiny")


def hf_logits(model, cfg, images, tokens, mask, mask_ar=None):
    """HF logits for [image tokens | text], with token_type_ids built from mask_ar as HF expects."""
    n, b = cfg.num_image_tokens, tokens.shape[0]
    ids = np.concatenate([np.full((b, n), cfg.image_token_index), tokens], 1)
    am = np.concatenate([np.ones((b, n), bool), mask], 1)
    ar = np.zeros_like(tokens) if mask_ar is None else mask_ar
    tt = np.concatenate([np.zeros((b, n), np.int64), ar], 1)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    pixel_values=torch.tensor(images.transpose(0, 3, 1, 2)),
                    attention_mask=torch.tensor(am, dtype=torch.long), token_type_ids=torch.tensor(tt))
    return out.logits.numpy()


@pytest.fixture(scope="module")
def loaded(hf_dir):
    from transformers import PaliGemmaForConditionalGeneration

    cfg, params = hf_weights.load_hf_paligemma(hf_dir)
    return cfg, params, PaliGemmaForConditionalGeneration.from_pretrained(str(hf_dir)).eval()


@pytest.mark.parametrize("length,suffix", [(12, 0), (30, 8)])
def test_logits_match_hf(loaded, length, suffix):
    cfg, params, model = loaded
    images, tokens, mask = tiny_inputs(cfg, length=length)
    assert cfg.num_image_tokens + length > 2 * cfg.llm.sliding_window  # the window really masks something
    mask_ar = None
    if suffix:
        mask_ar = np.zeros_like(tokens)
        mask_ar[:, length - suffix:] = 1
    ours = PaliGemma(cfg).apply({"params": params}, jnp.asarray(images), jnp.asarray(tokens),
                                jnp.asarray(mask), None if mask_ar is None else jnp.asarray(mask_ar)).logits
    theirs = hf_logits(model, cfg, images, tokens, mask, mask_ar)
    valid = np.concatenate([np.ones((2, cfg.num_image_tokens), bool), mask], 1)
    err = np.abs(np.asarray(ours) - theirs)[valid].max()
    assert err <= 1e-4, err
    assert np.abs(theirs).max() > 1.0  # logits are not trivially small


def test_extra_embeds_match_hf_inputs_embeds(loaded):
    cfg, params, model = loaded
    images, tokens, _ = tiny_inputs(cfg, length=10)
    mask = np.ones_like(tokens, bool)
    extras = np.random.default_rng(1).normal(size=(2, 5, cfg.llm.width)).astype(np.float32) * 0.05
    out = PaliGemma(cfg).apply({"params": params}, jnp.asarray(images), jnp.asarray(tokens), jnp.asarray(mask),
                               extra_embeds=jnp.asarray(extras))
    with torch.no_grad():
        img = model.model.get_image_features(torch.tensor(images.transpose(0, 3, 1, 2))).pooler_output
        txt = model.model.language_model.embed_tokens(torch.tensor(tokens, dtype=torch.long))
        emb = torch.cat([img, txt, torch.tensor(extras) * cfg.llm.width**0.5], 1)
        theirs = model(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], dtype=torch.long),
                       token_type_ids=torch.zeros(emb.shape[:2], dtype=torch.long)).logits.numpy()
    assert np.abs(np.asarray(out.logits) - theirs).max() <= 1e-4


def test_round_trip_bit_exact_and_export_loads_in_hf(loaded, hf_dir, tmp_path):
    from transformers import PaliGemmaForConditionalGeneration

    cfg, params, model = loaded
    out = tmp_path / "export"
    hf_weights.save_hf_paligemma(cfg, params, out)
    original = hf_weights.read_safetensors(hf_dir)
    exported = hf_weights.read_safetensors(out)
    assert sorted(original) == sorted(exported)
    for k, v in original.items():
        assert np.array_equal(v, exported[k]), k
    reloaded = PaliGemmaForConditionalGeneration.from_pretrained(str(out)).eval()
    images, tokens, mask = tiny_inputs(cfg, length=12)
    np.testing.assert_array_equal(hf_logits(reloaded, cfg, images, tokens, mask),
                                  hf_logits(model, cfg, images, tokens, mask))
    assert json.loads((out / "config.json").read_text())["image_token_index"] == cfg.image_token_index
