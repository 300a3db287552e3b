"""Read and write HF `PaliGemmaForConditionalGeneration` checkpoints (config.json + safetensors).

Vocabulary rows: the PaliGemma-2 release stores 257216 embedding rows: the 257152 real tokens, then the
`<image>` placeholder (id 257152) and alignment padding to a multiple of 64. Import keeps only the rows
before `image_token_index` when the placeholder is not the last row (so 257216 -> 257152); otherwise
(placeholder inside the vocabulary, e.g. tiny test models) every row is kept. Export reverses this: with
`image_token_index` unset or >= vocab_size it appends rows up to a multiple of 64 (>= vocab + 2), each the
mean of the real rows; the original extra rows are not kept (the model never reads them).
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from vitra_jax.atomic_dirs import atomic_output_dir
from vitra_jax.models.gemma2 import Gemma2Config
from vitra_jax.models.paligemma import PaliGemmaConfig
from vitra_jax.models.siglip import SiglipConfig
from vitra_jax.weights import names

_TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def config_from_hf(hf: dict) -> PaliGemmaConfig:
    """PaliGemmaConfig from an HF config.json dict (missing fields take HF's Gemma2/SigLIP defaults)."""
    t, v = hf.get("text_config", {}), hf.get("vision_config", {})
    act = t.get("hidden_activation") or t.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in _TANH_GELU:
        raise ValueError(f"text_config.hidden_activation {act!r} is not supported (tanh GELU only)")
    if v.get("vision_use_head", False):
        raise ValueError("vision_config.vision_use_head=True is not supported (PaliGemma uses no MAP head)")
    rope = t.get("rope_theta") or (t.get("rope_parameters") or {}).get("rope_theta", 10_000.0)
    rows = t.get("vocab_size", hf.get("vocab_size", 257152))
    image_token = hf.get("image_token_index", hf.get("image_token_id", rows - 1))
    vocab = image_token if image_token < rows - 1 else rows
    llm = Gemma2Config(
        width=t.get("hidden_size", 2304), depth=t.get("num_hidden_layers", 26),
        mlp_dim=t.get("intermediate_size", 9216), num_heads=t.get("num_attention_heads", 8),
        num_kv_heads=t.get("num_key_value_heads", 4), head_dim=t.get("head_dim", 256), vocab_size=vocab,
        query_pre_attn_scalar=int(t.get("query_pre_attn_scalar", 256)),
        attn_softcap=t.get("attn_logit_softcapping", 50.0), final_softcap=t.get("final_logit_softcapping", 30.0),
        sliding_window=t.get("sliding_window", 4096), rope_base=float(rope), norm_eps=t.get("rms_norm_eps", 1e-6))
    vision = SiglipConfig(
        width=v.get("hidden_size", 768), depth=v.get("num_hidden_layers", 12),
        mlp_dim=v.get("intermediate_size", 3072), num_heads=v.get("num_attention_heads", 12),
        patch_size=v.get("patch_size", 16), image_size=v.get("image_size", 224),
        norm_eps=v.get("layer_norm_eps", 1e-6))
    return PaliGemmaConfig(vision=vision, llm=llm, image_token_index=image_token)


def _hf_rows(cfg: PaliGemmaConfig) -> tuple[int, int]:
    """(number of embedding rows on disk, image token id) for export."""
    vocab, tok = cfg.llm.vocab_size, cfg.image_token_index
    if tok is not None and tok < vocab:
        return vocab, tok
    return -(-(vocab + 2) // 64) * 64, vocab


def hf_config_dict(cfg: PaliGemmaConfig) -> dict:
    """config.json content that `PaliGemmaForConditionalGeneration.from_pretrained` accepts."""
    t, v = cfg.llm, cfg.vision
    rows, tok = _hf_rows(cfg)
    text = {"model_type": "gemma2", "hidden_size": t.width, "num_hidden_layers": t.depth,
            "intermediate_size": t.mlp_dim, "num_attention_heads": t.num_heads,
            "num_key_value_heads": t.num_kv_heads, "head_dim": t.head_dim, "vocab_size": rows,
            "query_pre_attn_scalar": t.query_pre_attn_scalar, "attn_logit_softcapping": t.attn_softcap,
            "final_logit_softcapping": t.final_softcap, "sliding_window": t.sliding_window,
            "rope_theta": t.rope_base, "rms_norm_eps": t.norm_eps, "hidden_activation": "gelu_pytorch_tanh",
            "max_position_embeddings": 8192, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1}
    vision = {"model_type": "siglip_vision_model", "hidden_size": v.width, "num_hidden_layers": v.depth,
              "intermediate_size": v.mlp_dim, "num_attention_heads": v.num_heads, "patch_size": v.patch_size,
              "image_size": v.image_size, "layer_norm_eps": v.norm_eps, "hidden_act": "gelu_pytorch_tanh",
              "projection_dim": t.width, "num_image_tokens": v.num_patches, "vision_use_head": False}
    return {"model_type": "paligemma", "architectures": ["PaliGemmaForConditionalGeneration"],
            "text_config": text, "vision_config": vision, "image_token_index": tok, "vocab_size": rows,
            "projection_dim": t.width, "hidden_size": t.width, "pad_token_id": 0, "bos_token_id": 2,
            "eos_token_id": 1}


def params_from_hf_tensors(cfg: PaliGemmaConfig, tensors: dict[str, np.ndarray]) -> dict:
    """Our param tree (fp32 numpy) from HF tensors in any supported key style."""
    flat_in = {names.canonical_hf_name(k): v for k, v in tensors.items()}
    for k in names.TIED_HEADS:
        flat_in.pop(k, None)
    used, stacked = set(), {}
    want = names.expected_shapes(cfg)
    for rule in names.rules(cfg):
        keys = [rule.hf.format(i=i) for i in range(cfg.llm.depth if rule.jax.startswith("llm/")
                                                    else cfg.vision.depth)] if "{i}" in rule.hf else [rule.hf]
        parts = []
        for key in keys:
            if key not in flat_in:
                raise KeyError(f"missing HF tensor {key!r}")
            parts.append(rule.from_hf(np.asarray(flat_in[key], np.float32)))
            used.add(key)
        arr = np.stack(parts) if "{i}" in rule.hf else parts[0]
        if rule.part is not None:
            stacked.setdefault(rule.jax, {})[rule.part] = arr
            continue
        _check(rule.jax, rule.hf, arr.shape, want)
        stacked[rule.jax] = arr
    for path, slots in list(stacked.items()):
        if isinstance(slots, dict):
            stacked[path] = np.stack([slots[i] for i in sorted(slots)], axis=1)
            _check(path, path, stacked[path].shape, want)
    if names.EMBED_HF not in flat_in:
        raise KeyError(f"missing HF tensor {names.EMBED_HF!r}")
    emb = np.asarray(flat_in[names.EMBED_HF], np.float32)[: cfg.llm.vocab_size]
    _check(names.EMBED_JAX, names.EMBED_HF, emb.shape, want)
    stacked[names.EMBED_JAX] = emb
    used.add(names.EMBED_HF)
    extra = sorted(set(flat_in) - used)
    if extra:
        raise KeyError(f"unexpected HF tensor {extra[0]!r}")
    return names.unflatten(stacked)


def _check(path: str, hf_key: str, shape: tuple, want: dict) -> None:
    if tuple(shape) != want[path]:
        raise ValueError(f"HF tensor {hf_key!r} gives {path!r} shape {tuple(shape)}, expected {want[path]}")


def hf_tensors_from_params(cfg: PaliGemmaConfig, params: dict) -> dict[str, np.ndarray]:
    """HF tensors (on-disk key style, fp32) from our param tree."""
    flat = {k: np.asarray(v, np.float32) for k, v in names.flatten(params).items()}
    names.check_tree(cfg, flat)
    out = {}
    for rule in names.rules(cfg):
        arr = flat[rule.jax]
        if "{i}" not in rule.hf:
            out[rule.hf] = rule.to_hf(arr)
            continue
        for i in range(arr.shape[0]):
            layer = arr[i] if rule.part is None else arr[i, rule.part]
            out[rule.hf.format(i=i)] = np.ascontiguousarray(rule.to_hf(layer))
    emb = flat[names.EMBED_JAX]
    rows, _ = _hf_rows(cfg)
    if rows > emb.shape[0]:
        pad = np.broadcast_to(emb.mean(0, keepdims=True), (rows - emb.shape[0], emb.shape[1]))
        emb = np.concatenate([emb, pad])
    out[names.EMBED_HF] = np.ascontiguousarray(emb)
    return out


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of every *.safetensors file in a directory (or one file), as numpy (bf16 kept)."""
    from safetensors import safe_open

    p = pathlib.Path(path)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else [p]
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {p}")
    out = {}
    for f in files:
        with safe_open(str(f), framework="flax") as fh:
            for k in fh.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                out[k] = np.asarray(fh.get_tensor(k))
    return out


def load_hf_paligemma(path: str | os.PathLike) -> tuple[PaliGemmaConfig, dict]:
    """(config, params) from an HF PaliGemma-2 directory holding config.json and safetensors."""
    p = pathlib.Path(path)
    cfg = config_from_hf(json.loads((p / "config.json").read_text()))
    return cfg, params_from_hf_tensors(cfg, read_safetensors(p))


def save_hf_paligemma(cfg: PaliGemmaConfig, params: dict, out_dir: str | os.PathLike) -> None:
    """Writes config.json + model.safetensors loadable by HF; nothing is left behind on failure."""
    from safetensors.numpy import save_file

    tensors = hf_tensors_from_params(cfg, params)
    with atomic_output_dir(out_dir) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=2))
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
