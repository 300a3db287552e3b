"""The one table mapping our PaliGemma parameter tree to HF PaliGemma safetensors names, both ways.

HF names are written in the layout `save_pretrained` uses on disk (`vision_tower.*`,
`multi_modal_projector.*`, `language_model.model.*`); `canonical_hf_name` folds the other key styles
(`model.vision_tower.*`, `vision_tower.vision_model.*`, `model.language_model.*`) onto it. Each rule
carries both transforms, so import and export cannot drift apart. The embedding matrix is not in the
table: its vocabulary rows need the padding rules in `weights/hf.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from vitra_jax.models.paligemma import PaliGemmaConfig

Array = np.ndarray
EMBED_HF = "language_model.model.embed_tokens.weight"
EMBED_JAX = "llm/embedder/input_embedding"


@dataclasses.dataclass(frozen=True)
class Rule:
    """`jax` path (stacked over depth when `hf` has `{i}`); `part` picks a slot of a fused JAX array."""

    jax: str
    hf: str
    to_hf: Callable[[Array], Array]
    from_hf: Callable[[Array], Array]
    part: int | None = None


def _same(a: Array) -> Array:
    return a


def _t(a: Array) -> Array:
    return np.ascontiguousarray(a.T)


def rules(cfg: PaliGemmaConfig) -> list[Rule]:
    v, t = cfg.vision, cfg.llm
    nv, hv = v.num_heads, v.width // v.num_heads
    enc = "img/Transformer/encoderblock/"
    vis = "vision_tower.encoder.layers.{i}."
    lay = "llm/layers/"
    txt = "language_model.model.layers.{i}."

    def heads_in(n: int, h: int) -> tuple[Callable, Callable]:  # vision (D, N, H) <-> (N*H, D)
        return (lambda a: _t(a.reshape(a.shape[0], n * h)), lambda a: a.T.reshape(-1, n, h))

    def llm_in(n: int, h: int) -> tuple[Callable, Callable]:  # gemma (N, D, H) <-> (N*H, D)
        return (lambda a: np.ascontiguousarray(a.transpose(0, 2, 1).reshape(n * h, -1)),
                lambda a: a.reshape(n, h, -1).transpose(0, 2, 1))

    def heads_out(n: int, h: int) -> tuple[Callable, Callable]:  # (N, H, D) <-> (D, N*H)
        return (lambda a: _t(a.reshape(n * h, -1)), lambda a: a.T.reshape(n, h, -1))

    table = [
        Rule("img/embedding/kernel", "vision_tower.embeddings.patch_embedding.weight",
             lambda a: np.ascontiguousarray(a.transpose(3, 2, 0, 1)), lambda a: a.transpose(2, 3, 1, 0)),
        Rule("img/embedding/bias", "vision_tower.embeddings.patch_embedding.bias", _same, _same),
        Rule("img/pos_embedding", "vision_tower.embeddings.position_embedding.weight",
             lambda a: a.reshape(-1, a.shape[-1]), lambda a: a[None]),
        Rule("img/Transformer/encoder_norm/scale", "vision_tower.post_layernorm.weight", _same, _same),
        Rule("img/Transformer/encoder_norm/bias", "vision_tower.post_layernorm.bias", _same, _same),
        Rule("img/head/kernel", "multi_modal_projector.linear.weight", _t, _t),
        Rule("img/head/bias", "multi_modal_projector.linear.bias", _same, _same),
        Rule("llm/final_norm/scale", "language_model.model.norm.weight", _same, _same),
    ]
    for ln, hf_ln in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
        for ours, theirs in (("scale", "weight"), ("bias", "bias")):
            table.append(Rule(f"{enc}{ln}/{ours}", f"{vis}{hf_ln}.{theirs}", _same, _same))
    for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
        table.append(Rule(f"{enc}MlpBlock_0/{dense}/kernel", f"{vis}mlp.{fc}.weight", _t, _t))
        table.append(Rule(f"{enc}MlpBlock_0/{dense}/bias", f"{vis}mlp.{fc}.bias", _same, _same))
    mha = enc + "MultiHeadDotProductAttention_0/"
    for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        table.append(Rule(f"{mha}{ours}/kernel", f"{vis}self_attn.{theirs}.weight", *heads_in(nv, hv)))
        table.append(Rule(f"{mha}{ours}/bias", f"{vis}self_attn.{theirs}.bias",
                          lambda a: a.reshape(-1), lambda a: a.reshape(nv, hv)))
    table.append(Rule(f"{mha}out/kernel", f"{vis}self_attn.out_proj.weight", *heads_out(nv, hv)))
    table.append(Rule(f"{mha}out/bias", f"{vis}self_attn.out_proj.bias", _same, _same))

    table.append(Rule(f"{lay}attn/q_einsum/w", f"{txt}self_attn.q_proj.weight", *llm_in(t.num_heads, t.head_dim)))
    for part, proj in enumerate(("k_proj", "v_proj")):
        table.append(Rule(f"{lay}attn/kv_einsum/w", f"{txt}self_attn.{proj}.weight",
                          *llm_in(t.num_kv_heads, t.head_dim), part=part))
    table.append(Rule(f"{lay}attn/attn_vec_einsum/w", f"{txt}self_attn.o_proj.weight",
                      *heads_out(t.num_heads, t.head_dim)))
    for part, proj in enumerate(("gate_proj", "up_proj")):
        table.append(Rule(f"{lay}mlp/gating_einsum", f"{txt}mlp.{proj}.weight", _t, _t, part=part))
    table.append(Rule(f"{lay}mlp/linear", f"{txt}mlp.down_proj.weight", _t, _t))
    for ours, theirs in (("pre_attention_norm", "input_layernorm"),
                         ("post_attention_norm", "post_attention_layernorm"),
                         ("pre_ffw_norm", "pre_feedforward_layernorm"),
                         ("post_ffw_norm", "post_feedforward_layernorm")):
        table.append(Rule(f"{lay}{ours}/scale", f"{txt}{theirs}.weight", _same, _same))
    return table


_PREFIXES = (  # other key styles -> the on-disk style above; first match wins
    ("model.vision_tower.vision_model.", "vision_tower."),
    ("model.vision_tower.", "vision_tower."),
    ("vision_tower.vision_model.", "vision_tower."),
    ("model.language_model.", "language_model.model."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
TIED_HEADS = ("lm_head.weight", "language_model.lm_head.weight")


def canonical_hf_name(key: str) -> str:
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    return key


def flatten(tree: dict, prefix: str = "") -> dict[str, Array]:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, path + "/"))
        else:
            out[path] = v
    return out


def unflatten(flat: dict[str, Array]) -> dict:
    tree: dict = {}
    for path, v in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


def expected_shapes(cfg: PaliGemmaConfig) -> dict[str, tuple[int, ...]]:
    """Flat path -> shape of every parameter of `PaliGemma(cfg)`, from `jax.eval_shape` (no allocation)."""
    import jax
    import jax.numpy as jnp

    from vitra_jax.models.paligemma import PaliGemma

    s = cfg.image_size
    shapes = jax.eval_shape(
        PaliGemma(cfg).init, jax.random.key(0),
        jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32), jax.ShapeDtypeStruct((1, 2), jnp.int32),
        jax.ShapeDtypeStruct((1, 2), jnp.bool_))["params"]
    return {k: tuple(v.shape) for k, v in flatten(shapes).items()}


def check_tree(cfg: PaliGemmaConfig, flat: dict[str, Array]) -> None:
    """Raises naming the first missing, unexpected or mis-shaped parameter."""
    want = expected_shapes(cfg)
    for k in sorted(want):
        if k not in flat:
            raise KeyError(f"missing parameter {k!r}")
        if tuple(flat[k].shape) != want[k]:
            raise ValueError(f"parameter {k!r} has shape {tuple(flat[k].shape)}, expected {want[k]}")
    extra = sorted(set(flat) - set(want))
    if extra:
        raise KeyError(f"unexpected parameter {extra[0]!r}")
