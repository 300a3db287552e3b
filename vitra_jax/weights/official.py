"""Official VITRA checkpoints (`weights.pt` of the PyTorch release) ⇄ our policy param tree.

The release's state dict has four prefixes (reference §9.2): `backbone.` (HF PaliGemma in the
transformers-4.47.1 in-memory key style), `act_model.net.` (the DiT), `fov_encoder.projector.{0,2}.` and
`cognition_token`. The backbone goes through the one HF mapping table (`weights/names.py`, `weights/hf.py`),
so any HF key style is read; export writes the 4.47.1 style (`vision_tower.vision_model.*`,
`language_model.model.*`, plus the tied `language_model.lm_head.weight`) so the release loads it with
`strict=True`. DiT Linear weights are transposed; per-block tensors are stacked over depth.

The release pads actions to 192 and states to 212 dims; only the first 102 are real. Padded inputs are
zero in value and mask, and padded outputs are never supervised nor read back (sampling multiplies by the
mask), so dropping them is exact: import keeps columns `[0:102, P:P+102]` of the first action/state
embedder layer (P = 192/212) and rows `[:102]` of the output layer; export writes zeros elsewhere.

Deliberate differences from the release:
- Non-zero padding is ignored on import by default: the released weights hold the N(0, 0.02) initial values
  (shrunk by weight decay) in the padded embedder columns, since those columns never receive a gradient.
  `check_padding=True` refuses any non-zero padding instead. Export always writes zeros there, so an
  exported file differs from the release only in weights that cannot change any output.
- The tied LM head (`language_model.lm_head.weight`) is optional on import (it duplicates the embedding)
  and always written on export. Embedding rows beyond the vocabulary follow `weights/hf.py`.
- Only the released architecture converts: FoV token on, untied cognition token, state into the DiT; a
  config asking for anything else is refused by `policy_config_from_official`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vitra_jax.handspace import layout
from vitra_jax.models.dit import DiTConfig
from vitra_jax.models.paligemma import paligemma_config
from vitra_jax.models.policy import PolicyConfig
from vitra_jax.weights import hf, names

Array = np.ndarray
ACTION_PAD = 192  # the release's unified action width
STATE_PAD = 212  # the release's unified state width (the last 20 were MANO betas, unused)
REAL_DIMS = 102
DIT = "act_model.net."
BACKBONE = "backbone."
LM_HEAD = "language_model.lm_head.weight"
# DiT presets of the release (depth, width, heads); its config's `hidden_size` is ignored there too.
DIT_PRESETS = {"DiT-T": (3, 256, 4), "DiT-S": (6, 384, 4), "DiT-M": (12, 384, 6), "DiT-B": (12, 768, 12),
               "DiT-L": (24, 1024, 16)}

# our DiT module name -> official module name (under `act_model.net.`; blocks under `blocks.{i}.`)
_DIT_MODULES = {
    "z_embedder": "z_embedder.linear", "t_embedder_fc1": "t_embedder.mlp.0", "t_embedder_fc2": "t_embedder.mlp.2",
    "x_embedder_fc1": "x_embedder.projector.0", "x_embedder_fc2": "x_embedder.projector.2",
    "state_embedder_fc1": "state_embedder.projector.0", "state_embedder_fc2": "state_embedder.projector.2",
    "state_embedder_fc3": "state_embedder.projector.4", "final_adaLN": "final_layer.adaLN_modulation.1",
    "final_linear": "final_layer.linear",
}
_BLOCK_MODULES = {"adaLN": "adaLN_modulation.1", "qkv": "attn.qkv", "q_norm": "attn.q_norm",
                  "k_norm": "attn.k_norm", "proj": "attn.proj", "mlp_fc1": "mlp.fc1", "mlp_fc2": "mlp.fc2"}
_LEAVES = {"kernel": "weight", "bias": "bias", "scale": "weight"}
_PAD_IN = {"x_embedder_fc1": ACTION_PAD, "state_embedder_fc1": STATE_PAD}  # [value·mask, mask] inputs


class OfficialFormatError(ValueError):
    """A release checkpoint or config.json this project cannot read, or a policy the release cannot express."""


@dataclasses.dataclass(frozen=True)
class _Rule:
    """One official tensor: how it is made from our array and back, and which of its entries are padding."""

    ours: str  # flat path in our tree ("action_model/blocks/qkv/kernel")
    official: str  # official key; "{i}" for per-block tensors (ours stacked on axis 0)
    to_official: Callable[[Array], Array]
    from_official: Callable[[Array], Array]
    padding: Callable[[Array], Array] | None = None  # official array -> its padded entries


def _same(a: Array) -> Array:
    return a


def _t(a: Array) -> Array:
    return np.ascontiguousarray(a.T)


def _pad_in(pad: int) -> tuple[Callable, Callable, Callable]:
    """Ours (2·102, H) kernel ⇄ official (H, 2·pad) weight: values in columns 0:102, masks in pad:pad+102."""
    n = REAL_DIMS

    def to_off(k: Array) -> Array:
        w = np.zeros((k.shape[1], 2 * pad), k.dtype)
        w[:, :n], w[:, pad:pad + n] = k[:n].T, k[n:].T
        return w

    def from_off(w: Array) -> Array:
        return np.ascontiguousarray(np.concatenate([w[:, :n], w[:, pad:pad + n]], axis=1).T)

    def padding(w: Array) -> Array:
        return np.concatenate([w[:, n:pad], w[:, pad + n:]], axis=1)

    return to_off, from_off, padding


def _pad_out(kernel: bool) -> tuple[Callable, Callable, Callable]:
    """Ours (D, 102) kernel / (102,) bias ⇄ official (192, D) weight / (192,) bias, real rows first."""
    n = REAL_DIMS

    def to_off(a: Array) -> Array:
        a = a.T if kernel else a
        out = np.zeros((ACTION_PAD, *a.shape[1:]), a.dtype)
        out[:n] = a
        return out

    def from_off(a: Array) -> Array:
        return _t(a[:n]) if kernel else np.ascontiguousarray(a[:n])

    return to_off, from_off, lambda a: a[n:]


def _dit_rule(path: str) -> _Rule:
    """The rule for one leaf `path` of our DiT tree (relative to `action_model/`)."""
    parts = path.split("/")
    if path == "uncondition":
        return _Rule(path, "z_embedder.uncondition", lambda a: a[None], lambda a: a[0])
    if path == "pos_embedding":
        return _Rule(path, "positional_embedding", _same, _same)
    if parts[0] == "blocks" and len(parts) == 3 and parts[1] in _BLOCK_MODULES and parts[2] in _LEAVES:
        name = f"blocks.{{i}}.{_BLOCK_MODULES[parts[1]]}.{_LEAVES[parts[2]]}"
        fn = _t if parts[2] == "kernel" else _same
        return _Rule(path, name, fn, fn)
    if len(parts) == 2 and parts[0] in _DIT_MODULES and parts[1] in ("kernel", "bias"):
        module, leaf = parts
        name = f"{_DIT_MODULES[module]}.{_LEAVES[leaf]}"
        if module in _PAD_IN and leaf == "kernel":
            return _Rule(path, name, *_pad_in(_PAD_IN[module]))
        if module == "final_linear":
            return _Rule(path, name, *_pad_out(leaf == "kernel"))
        fn = _t if leaf == "kernel" else _same
        return _Rule(path, name, fn, fn)
    raise ValueError(f"DiT parameter {path!r} has no official counterpart")


def _fov_rule(path: str) -> _Rule:
    layer, leaf = path.split("/")
    index = {"fc1": 0, "fc2": 2}[layer]
    fn = _t if leaf == "kernel" else _same
    return _Rule(path, f"projector.{index}.{_LEAVES[leaf]}", fn, fn)


def _our_shapes(cfg: PolicyConfig) -> dict[str, tuple[int, ...]]:
    """Flat path -> shape of every non-VLM parameter of the policy, via `jax.eval_shape` (no allocation)."""
    import jax

    from vitra_jax.models.policy import VitraPolicy

    tree = jax.eval_shape(VitraPolicy(cfg).init, jax.random.key(0))
    return {k: tuple(v.shape) for k, v in names.flatten(tree).items() if not k.startswith("vlm/")}


def _rules(cfg: PolicyConfig) -> list[_Rule]:
    """Rules for the DiT, FoV encoder and cognition token, with official keys fully prefixed."""
    if cfg.dit.action_dim != REAL_DIMS or cfg.dit.state_dim != REAL_DIMS:
        raise OfficialFormatError(f"the official layout needs action_dim = state_dim = {REAL_DIMS}, got "
                         f"{cfg.dit.action_dim} and {cfg.dit.state_dim}")
    out = []
    for path in sorted(_our_shapes(cfg)):
        head, _, rest = path.partition("/")
        if head == "action_model":
            r = _dit_rule(rest)
            out.append(dataclasses.replace(r, ours=path, official=DIT + r.official))
        elif head == "fov_encoder":
            r = _fov_rule(rest)
            out.append(dataclasses.replace(r, ours=path, official="fov_encoder." + r.official))
        elif path == "cognition_token":
            out.append(_Rule(path, "cognition_token", _same, _same))
        else:
            raise ValueError(f"policy parameter {path!r} has no official counterpart")
    return out


def _official_shape(rule: _Rule, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Official shape of `rule`'s tensor from our shape (a zero-stride dummy, so nothing is allocated)."""
    dummy = np.broadcast_to(np.zeros((), np.float32), shape[1:] if "{i}" in rule.official else shape)
    return tuple(rule.to_official(dummy).shape)


def _expected_backbone(cfg: PolicyConfig) -> set[str]:
    """Canonical HF names (see `names.canonical_hf_name`) every official backbone must hold."""
    keys = {names.EMBED_HF}
    for rule in names.rules(cfg.vlm):
        depth = cfg.vlm.llm.depth if rule.jax.startswith("llm/") else cfg.vlm.vision.depth
        keys.update([rule.hf.format(i=i) for i in range(depth)] if "{i}" in rule.hf else [rule.hf])
    return keys


def official_to_params(state_dict: Mapping[str, Array], cfg: PolicyConfig, *,
                       check_padding: bool = False) -> dict:
    """Our policy tree (fp32 numpy) from an official VITRA state dict.

    Raises one ValueError listing every missing, unexpected or mis-shaped tensor; with `check_padding`,
    also every tensor holding a non-zero value in the 192/212-d padding.
    """
    rules = _rules(cfg)
    shapes = _our_shapes(cfg)
    backbone, rest, problems = {}, dict(state_dict), []
    for key in list(rest):
        if key.startswith(BACKBONE):
            canon = names.canonical_hf_name(key[len(BACKBONE):])
            if canon in backbone:
                problems.append(f"duplicate backbone tensor {key!r} (same as another key style)")
            backbone[canon] = rest.pop(key)
    want = _expected_backbone(cfg)
    problems += [f"missing {BACKBONE}{k}" for k in sorted(want - set(backbone))]
    problems += [f"unexpected {BACKBONE}{k}" for k in sorted(set(backbone) - want - set(names.TIED_HEADS))]

    flat = {}
    for rule in rules:
        stacked = "{i}" in rule.official
        keys = [rule.official.format(i=i) for i in range(cfg.dit.depth)] if stacked else [rule.official]
        want_shape = _official_shape(rule, shapes[rule.ours])
        parts = []
        for key in keys:
            if key not in rest:
                problems.append(f"missing {key}")
                continue
            arr = np.asarray(rest.pop(key), np.float32)
            if arr.shape != want_shape:
                problems.append(f"{key} has shape {arr.shape}, expected {want_shape}")
                continue
            if check_padding and rule.padding is not None and np.any(rule.padding(arr)):
                problems.append(f"{key} holds non-zero values in the 192/212-d padding")
            parts.append(rule.from_official(arr))
        if len(parts) == len(keys):
            flat[rule.ours] = np.stack(parts) if stacked else parts[0]
    problems += [f"unexpected {k}" for k in sorted(rest)]
    if problems:
        raise OfficialFormatError("official checkpoint does not match the config:\n  " + "\n  ".join(problems))
    try:
        vlm = hf.params_from_hf_tensors(cfg.vlm, backbone)
    except (KeyError, ValueError) as e:  # a backbone shape error, named by its HF key
        raise OfficialFormatError(f"official checkpoint backbone: {e}") from None
    return {**names.unflatten(flat), "vlm": vlm}


def params_to_official(params: dict, cfg: PolicyConfig) -> dict[str, Array]:
    """Official state dict (fp32 numpy, transformers-4.47.1 backbone keys) that the release loads strictly."""
    out = {}
    for key, arr in hf.hf_tensors_from_params(cfg.vlm, params["vlm"]).items():
        if key.startswith("vision_tower."):
            key = "vision_tower.vision_model." + key[len("vision_tower."):]
        out[BACKBONE + key] = arr
    out[BACKBONE + LM_HEAD] = out[BACKBONE + names.EMBED_HF]  # tied, as the release's state dict holds it
    out.update(head_to_official(params, cfg))
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def head_to_official(params: dict, cfg: PolicyConfig) -> dict[str, Array]:
    """The non-backbone part of `params_to_official` (`act_model.net.*`, `fov_encoder.*`, `cognition_token`),
    without touching the VLM weights."""
    flat = {k: np.asarray(v, np.float32) for k, v in names.flatten(params).items() if not k.startswith("vlm/")}
    shapes = _our_shapes(cfg)
    bad = sorted(k for k in set(flat) | set(shapes) if shapes.get(k) != (flat[k].shape if k in flat else None))
    if bad:
        raise ValueError(f"params do not match the config (missing, unexpected or mis-shaped): {bad}")
    out = {}
    for rule in _rules(cfg):
        arr = flat[rule.ours]
        if "{i}" in rule.official:
            out.update({rule.official.format(i=i): rule.to_official(arr[i]) for i in range(arr.shape[0])})
        else:
            out[rule.official] = rule.to_official(arr)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, Array]:
    """State dict of a release `weights.pt` (or a directory holding one, or the release's HF layout whose
    `checkpoints/` holds it: the first `.pt` there, as the release picks) or a safetensors file, as numpy.

    bf16 tensors of a `.pt` file are widened to fp32 (numpy has no bf16); safetensors keep their dtype.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        found = sorted((p / "checkpoints").glob("*.pt")) if not (p / "weights.pt").is_file() else []
        p = found[0] if found else p / "weights.pt"
    if not p.is_file():
        raise FileNotFoundError(f"no official checkpoint at {p}")
    if p.suffix == ".safetensors":
        return hf.read_safetensors(p)
    import torch

    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise OfficialFormatError(f"{p} holds a {type(state).__name__}, not a state dict")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise OfficialFormatError(f"{p}: entry {k!r} is a {type(v).__name__}, not a tensor")
        v = v.detach()
        out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
    return out


def save_official_checkpoint(params: dict, cfg: PolicyConfig, path: str | os.PathLike) -> None:
    """Writes `params` in the official layout: torch `.pt` (default) or `.safetensors` by suffix; atomic."""
    p = pathlib.Path(path)
    state = params_to_official(params, cfg)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.numpy import save_file

            # the tied head shares memory with the embedding; safetensors refuses shared buffers
            save_file({k: np.array(v) for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
        else:
            import torch

            torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, tmp)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def policy_config_from_official(config: Mapping[str, Any], **overrides: Any) -> PolicyConfig:
    """Our PolicyConfig from the release's `config.json` (fields that shape the weights or the loss).

    Read: `fwd_pred_next_n` (chunk length), `action_model.model_type` (DiT preset; `hidden_size` is ignored
    as the release ignores it), `action_model.token_size` (must equal the VLM width),
    `action_model.action_dim` / `state_encoder.state_dim` (must be 192 / 212), `vlm.pretrained_model_name_or_path`
    (PaliGemma-2 3B at 224/448/896), `repeated_diffusion_steps`, `loss_type` (human / robot weights),
    `train_setup.freeze_option`. `overrides` replace PolicyConfig fields afterwards (e.g. `vlm=` for other sizes).
    """
    am, problems = config.get("action_model", {}), []
    if config.get("use_fov", True) is not True:
        problems.append("use_fov must be true")
    if config.get("untied_cognition_token", True) is not True:
        problems.append("untied_cognition_token must be true")
    if config.get("use_state", "DiT") != "DiT":
        problems.append(f"use_state must be 'DiT', got {config.get('use_state')!r}")
    if am.get("action_dim", ACTION_PAD) != ACTION_PAD:
        problems.append(f"action_model.action_dim must be {ACTION_PAD}, got {am.get('action_dim')}")
    state_dim = config.get("state_encoder", {}).get("state_dim", STATE_PAD)
    if state_dim != STATE_PAD:
        problems.append(f"state_encoder.state_dim must be {STATE_PAD}, got {state_dim}")
    model_type = am.get("model_type", "DiT-B")
    if model_type not in DIT_PRESETS:
        problems.append(f"action_model.model_type {model_type!r} is not one of {sorted(DIT_PRESETS)}")
    loss_type = config.get("loss_type", "human")
    if loss_type not in layout.LOSS_WEIGHTS:
        problems.append(f"loss_type must be 'human' or 'robot', got {loss_type!r}")
    vlm_name = str(config.get("vlm", {}).get("pretrained_model_name_or_path", "paligemma2-3b-mix-224"))
    size = next((s for s in ("224", "448", "896") if f"3b-pt-{s}" in vlm_name or f"3b-mix-{s}" in vlm_name), None)
    if size is None and "vlm" not in overrides:
        problems.append(f"vlm.pretrained_model_name_or_path {vlm_name!r} is not a PaliGemma-2 3B; name one of our "
                        "PaliGemma configs (convert's --config, vlm= in Python)")
    if problems:
        raise OfficialFormatError("unsupported official config: " + "; ".join(problems))
    vlm = overrides.pop("vlm", None) or paligemma_config(f"3b-{size}")
    token_size = am.get("token_size", vlm.llm.width)
    if token_size != vlm.llm.width:
        raise OfficialFormatError(f"action_model.token_size {token_size} differs from the VLM width {vlm.llm.width}")
    depth, width, heads = DIT_PRESETS[model_type]
    dit_fields = {"depth": depth, "width": width, "num_heads": heads, "token_size": token_size,
                  "chunk_len": int(config.get("fwd_pred_next_n", 16)),
                  "qk_norm": "timm_0_9_10"}  # the release's q/k norm (reference §9.1)
    weights = layout.LOSS_WEIGHTS[loss_type]
    freeze = config.get("train_setup", {}).get("freeze_option", "freeze_vision_encoder")
    cfg = PolicyConfig(vlm=vlm, dit=DiTConfig(**dit_fields), repeats=int(config.get("repeated_diffusion_steps", 8)),
                       wrist_weight=weights["wrist"], finger_weight=weights["fingers"],
                       freeze_vision=freeze == "freeze_vision_encoder")
    return dataclasses.replace(cfg, **overrides)


# what the release fixes and our PolicyConfig leaves free: an official config.json cannot say anything else
_RELEASE_FIXED = {"dit.mlp_ratio": 4, "dit.state_hidden": 3072, "dit.freq_dim": 256, "dit.action_dim": REAL_DIMS,
                  "dit.state_dim": REAL_DIMS, "num_train_steps": 100, "cond_dropout": 0.1,
                  "dit.qk_norm": "timm_0_9_10"}


def official_config(cfg: PolicyConfig, vlm_name: str | None = None) -> dict:
    """The release's `config.json` for `cfg`: the fields `build_vla` reads, inverse of `policy_config_from_official`.

    The DiT must be one of the release's presets and the VLM a PaliGemma-2 3B at 224/448/896 (written as
    `google/paligemma2-3b-mix-{size}`), unless `vlm_name` names the HF folder or hub id of the PaliGemma the
    release should build instead. Everything the release hard-codes (timm-0.9.10 q/k norm, 100 diffusion steps,
    MLP ratio 4, state hidden 3072, 256 frequencies, condition dropout 0.1) must hold, and the loss weights must
    be the human or the robot ones; anything else raises one ValueError listing what the release cannot express.
    `model_load_path` and `statistics_path` are left for the user to point at `weights.pt` and
    `dataset_statistics.json`. Our inference-only fields (`max_text_len`, dtypes, remat) have no counterpart.
    """
    problems = []
    dims = (cfg.dit.depth, cfg.dit.width, cfg.dit.num_heads)
    preset = next((name for name, v in DIT_PRESETS.items() if v == dims), None)
    if preset is None:
        problems.append(f"DiT (depth, width, heads) {dims} is none of the release's presets {DIT_PRESETS}")
    for field, want in _RELEASE_FIXED.items():
        have = getattr(cfg.dit, field[4:]) if field.startswith("dit.") else getattr(cfg, field)
        if have != want:
            problems.append(f"{field} is {have!r}; the release fixes it to {want!r}")
    if cfg.dit.token_size != cfg.vlm.llm.width:
        problems.append(f"dit.token_size {cfg.dit.token_size} differs from the VLM width {cfg.vlm.llm.width}")
    weights = {"wrist": cfg.wrist_weight, "fingers": cfg.finger_weight}
    loss_type = next((k for k, w in layout.LOSS_WEIGHTS.items() if w == weights), None)
    if loss_type is None:
        problems.append(f"loss weights {weights} are neither the human {layout.HUMAN_LOSS_WEIGHTS} nor the robot "
                        f"{layout.ROBOT_LOSS_WEIGHTS} ones")
    arch = dataclasses.replace(cfg.vlm, dtype="float32", remat_policy="none")
    size = next((s for s in (224, 448, 896) if arch == paligemma_config(f"3b-{s}")), None)
    if size is None and vlm_name is None:
        problems.append("the VLM is not a PaliGemma-2 3B at 224/448/896; pass vlm_name (its HF folder or hub id)")
    if problems:
        raise OfficialFormatError("the release cannot express this policy config: " + "; ".join(problems))
    return {
        "vla_name": "VITRA_Paligemma", "model": "vitra_paligemma2", "fwd_pred_next_n": cfg.dit.chunk_len,
        "use_fov": True, "untied_cognition_token": True, "use_state": "DiT", "loss_type": loss_type,
        "train_setup": {"freeze_option": "freeze_vision_encoder" if cfg.freeze_vision else "full_finetune"},
        "state_encoder": {"state_dim": STATE_PAD},
        "action_model": {"model_type": preset, "token_size": cfg.dit.token_size, "action_dim": ACTION_PAD,
                         "hidden_size": cfg.dit.width},
        "vlm": {"type": "PaliGemmaForConditionalGeneration", "name": "paligemma",
                "pretrained_model_name_or_path": vlm_name or f"google/paligemma2-3b-mix-{size}"},
        "repeated_diffusion_steps": cfg.repeats,
        "model_load_path": None, "statistics_path": None,
    }
