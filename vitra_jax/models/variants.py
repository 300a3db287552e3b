"""The `PolicyConfig` a training config's `model` section names: a named size plus the run's choices.

Checkpoints record the resolved training config, so training, evaluation and export all rebuild the same
model through `from_config`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vitra_jax.handspace import layout
from vitra_jax.models.policy import PolicyConfig, policy_config


def from_config(model: Any) -> PolicyConfig:
    """`model` has variant ('tiny' | 'demo' | '3b'), image_size and max_text_len (0 = the variant's), dtype (VLM
    compute), remat_policy, dit_remat, repeats, freeze_vision, qk_norm (the DiT's q/k norm, `dit.QK_NORMS`;
    configs written before it existed mean "rms") and loss_type (the release's 'human' or 'robot' component
    weights; absent means 'human'). The DiT always computes in fp32, as the release."""
    cfg = policy_config(model.variant)
    vision = cfg.vlm.vision
    if model.image_size:
        vision = dataclasses.replace(vision, image_size=model.image_size)
    vlm = dataclasses.replace(cfg.vlm, vision=vision, dtype=model.dtype, remat_policy=model.remat_policy)
    dit = dataclasses.replace(cfg.dit, remat=model.dit_remat, qk_norm=model.get("qk_norm", "rms"))
    loss_type = model.get("loss_type", "human")
    if loss_type not in layout.LOSS_WEIGHTS:
        raise ValueError(f"model.loss_type must be one of {sorted(layout.LOSS_WEIGHTS)}, got {loss_type!r}")
    weights = layout.LOSS_WEIGHTS[loss_type]
    return dataclasses.replace(cfg, vlm=vlm, dit=dit, wrist_weight=weights["wrist"], finger_weight=weights["fingers"],
                               repeats=model.repeats, freeze_vision=model.freeze_vision,
                               max_text_len=model.max_text_len or cfg.max_text_len)
