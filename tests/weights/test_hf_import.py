"""HF import: key styles, vocabulary padding rules, and errors naming the offending key."""

import numpy as np
import pytest

from tests.factories import tiny_config, tiny_hf_model
from vitra_jax.weights import hf, names


@pytest.fixture(scope="module")
def hf_tensors():
    model = tiny_hf_model()
    return {k: v.numpy() for k, v in model.state_dict().items()}, model.config.to_dict()


def test_in_memory_and_legacy_key_styles_give_same_params(hf_tensors):
    tensors, config = hf_tensors
    cfg = hf.config_from_hf(config)
    assert cfg.llm == tiny_config().llm and cfg.vision == tiny_config().vision
    new_style = hf.params_from_hf_tensors(cfg, tensors)  # model.vision_tower.*, model.language_model.*
    legacy = {}
    for k, v in tensors.items():
        k = k.replace("model.vision_tower.", "vision_tower.vision_model.")
        k = k.replace("model.language_model.", "language_model.model.")
        legacy[k.replace("model.multi_modal_projector.", "multi_modal_projector.")] = v
    old_style = hf.params_from_hf_tensors(cfg, legacy)
    a, b = names.flatten(new_style), names.flatten(old_style)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    q = tensors["model.language_model.layers.1.self_attn.q_proj.weight"]  # (N*H, D)
    np.testing.assert_array_equal(a["llm/layers/attn/q_einsum/w"][1, 1], q[24:48].T)


def test_release_style_vocab_padding_is_dropped_and_restored(hf_tensors):
    tensors, config = hf_tensors
    cfg = hf.config_from_hf(config)
    v = cfg.llm.vocab_size
    padded = dict(tensors)
    emb = tensors["model.language_model.embed_tokens.weight"]
    padded["model.language_model.embed_tokens.weight"] = np.concatenate([emb, np.ones((64, emb.shape[1]))])
    release = dict(config, image_token_index=v)
    release["text_config"] = dict(config["text_config"], vocab_size=v + 64)
    cfg_r = hf.config_from_hf(release)
    assert cfg_r.llm.vocab_size == v and cfg_r.image_token_index == v
    params = hf.params_from_hf_tensors(cfg_r, padded)
    np.testing.assert_array_equal(params["llm"]["embedder"]["input_embedding"], emb)
    out = hf.hf_tensors_from_params(cfg_r, params)[names.EMBED_HF]
    assert out.shape[0] == v + 64 and hf.hf_config_dict(cfg_r)["text_config"]["vocab_size"] == v + 64
    np.testing.assert_allclose(out[v:], np.broadcast_to(emb.mean(0), (64, emb.shape[1])), rtol=1e-6)


def test_missing_and_misshaped_keys_are_named(hf_tensors):
    tensors, config = hf_tensors
    cfg = hf.config_from_hf(config)
    broken = dict(tensors)
    del broken["model.vision_tower.encoder.layers.1.mlp.fc2.bias"]
    with pytest.raises(KeyError, match=r"vision_tower\.encoder\.layers\.1\.mlp\.fc2\.bias"):
        hf.params_from_hf_tensors(cfg, broken)
    broken = dict(tensors)
    broken["model.multi_modal_projector.linear.weight"] = np.zeros((48, 31), np.float32)
    with pytest.raises(ValueError, match=r"multi_modal_projector\.linear\.weight"):
        hf.params_from_hf_tensors(cfg, broken)
    broken = dict(tensors, **{"model.vision_tower.head.probe": np.zeros(3)})
    with pytest.raises(KeyError, match=r"vision_tower\.head\.probe"):
        hf.params_from_hf_tensors(cfg, broken)


def test_failed_export_leaves_no_directory(hf_tensors, tmp_path):
    tensors, config = hf_tensors
    cfg = hf.config_from_hf(config)
    params = hf.params_from_hf_tensors(cfg, tensors)
    params["llm"]["final_norm"]["scale"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match="llm/final_norm/scale"):
        hf.save_hf_paligemma(cfg, params, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
