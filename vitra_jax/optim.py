"""The optimizer of the VITRA recipe: parameter groups, their learning-rate schedules, freezing, weight decay.

Groups (official `split_modality_collator`, vitra_official.md §4):
  backbone  every PaliGemma parameter that trains: Gemma-2, word embeddings and the multimodal projector
            (`vlm/img/head`); learning rate `backbone_lr`, held at 0 for the first `backbone_freeze_steps`;
  action    the DiT head, the FoV encoder and the cognition token; learning rate `action_lr`;
  frozen    the SigLIP vision tower (everything under `vlm/img` except the projector) when `freeze_vision`.
AdamW on both trained groups; weight decay only on matrices (ndim ≥ 2) and on the cognition token, never on
biases, norm scales or other 1-d parameters; gradients clipped by their global norm first. Frozen leaves get
neither optimizer state nor updates.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

GROUPS = ("backbone", "action")
FROZEN = "frozen"


def _keys(path) -> list[str]:
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def param_labels(params: Any, freeze_vision: bool = True) -> Any:
    """Pytree of group names ('backbone' | 'action' | 'frozen') matching `params`."""
    def label(path, _):
        keys = _keys(path)
        if keys[0] != "vlm":
            return "action"
        if freeze_vision and keys[1] == "img" and keys[2:3] != ["head"]:
            return FROZEN
        return "backbone"
    return jax.tree_util.tree_map_with_path(label, params)


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: matrices and the cognition token, not biases or 1-d scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: p.ndim >= 2 or _keys(path) == ["cognition_token"], params)


def schedule(cfg: ml_collections.ConfigDict, peak: float, hold_steps: int = 0) -> optax.Schedule:
    """`cfg.schedule` ('constant' | 'warmup_constant' | 'cosine' | 'warmup_cosine') at `peak`, held at 0 for
    `hold_steps`; cosine schedules decay over `cfg.decay_steps` to `peak * cfg.end_lr_ratio`.

    Warmup and cosine decay count from the end of the hold, so a frozen-then-released backbone warms up too.
    """
    warmup, total = int(cfg.warmup_steps), int(cfg.decay_steps)
    if cfg.schedule == "constant":
        body = optax.constant_schedule(peak)
    elif cfg.schedule == "warmup_constant":
        body = optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup, 1)),
                                     optax.constant_schedule(peak)], [warmup])
    elif cfg.schedule == "cosine":
        body = optax.cosine_decay_schedule(peak, max(total, 1), alpha=cfg.end_lr_ratio)
    elif cfg.schedule == "warmup_cosine":
        if total <= warmup:
            raise ValueError(f"optim.decay_steps ({total}) must exceed optim.warmup_steps ({warmup})")
        body = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, total, end_value=peak * cfg.end_lr_ratio)
    else:
        raise ValueError(f"unknown optim.schedule {cfg.schedule!r}; choose constant, warmup_constant, cosine "
                         "or warmup_cosine")
    if hold_steps <= 0:
        return body
    return optax.join_schedules([optax.constant_schedule(0.0), body], [hold_steps])


def group_schedules(cfg: ml_collections.ConfigDict) -> dict[str, optax.Schedule]:
    """Learning-rate schedule of each trained group."""
    return {"backbone": schedule(cfg, cfg.backbone_lr, cfg.backbone_freeze_steps),
            "action": schedule(cfg, cfg.action_lr)}


def make_optimizer(cfg: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW per group (`cfg` is the `optim` section of a training config)."""
    labels = param_labels(params, cfg.freeze_vision)

    def adamw(lr: optax.Schedule) -> optax.GradientTransformation:
        return optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                           mask=decay_mask)  # a callable: it sees each group's masked tree

    transforms = {name: adamw(s) for name, s in group_schedules(cfg).items()}
    transforms[FROZEN] = optax.set_to_zero()
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    return optax.chain(*chain, optax.multi_transform(transforms, labels))


def stop_frozen(params: Any, labels: Any) -> Any:
    """`params` with the frozen group behind `stop_gradient`, so no backward pass runs through it."""
    return jax.tree.map(lambda p, g: jax.lax.stop_gradient(p) if g == FROZEN else p, params, labels)


def learning_rates(cfg: ml_collections.ConfigDict) -> Callable[[jax.Array], dict[str, jax.Array]]:
    """step -> {'lr_backbone': ..., 'lr_action': ...} for logging."""
    scheds = group_schedules(cfg)
    return lambda step: {f"lr_{k}": jnp.asarray(s(step), jnp.float32) for k, s in scheds.items()}
