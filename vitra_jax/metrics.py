"""Training figures: analytic FLOPs per example, MFU, step timing, and a TensorBoard + stdout writer.

FLOPs are counted analytically because XLA's `cost_analysis()` counts a scanned layer stack once. Per example
and training step, with P the parameters a token passes through and n the tokens it does so for:
  trained module, forward + backward  6·P·n  (+2·P·n more where the forward is rematerialised)
  frozen module (SigLIP), forward     2·P·n  (no gradient flows into the image encoder)
plus attention score/value products (4·n²·H·Dh per layer forward; ×3 with backward). Tokens: SigLIP sees
the patches, the projector the patches, Gemma-2 the prefix (patches + text + FoV + cognition), the DiT R noise
draws of (chunk + 2) tokens. Embedding lookups cost nothing; the LM head is never computed in training.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

# Dense bf16 peak FLOP/s per device, from vendor spec sheets.
PEAK_FLOPS = {"h100": 989e12, "h200": 989e12, "gh200": 989e12, "a100": 312e12, "l40s": 362e12,
              "rtx 4090": 165e12, "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12, "tpu v5p": 459e12,
              "tpu v6 lite": 918e12, "tpu v6e": 918e12}


def peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak bf16 FLOP/s of a device kind, or None where unknown (e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind.lower()
    for name, flops in PEAK_FLOPS.items():
        if name in kind:
            return flops
    return None


def _size(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def flops_per_example(policy_cfg: Any, params: Any, text_len: int) -> float:
    """Training FLOPs of one example (all R noise draws) for a `PolicyConfig` and its (abstract) params."""
    vlm, llm, dit = policy_cfg.vlm, policy_cfg.vlm.llm, policy_cfg.dit
    remat = vlm.remat_policy != "none"
    img = params["vlm"]["img"]
    patches = vlm.num_image_tokens
    siglip = _size({k: v for k, v in img.items() if k != "head"})
    projector = _size(img.get("head", {}))
    gemma = _size(params["vlm"]["llm"]) - _size(params["vlm"]["llm"]["embedder"])
    seq = patches + text_len + 2
    train_mult = 6 + (2 if remat else 0)
    siglip_mult = 2 if policy_cfg.freeze_vision else train_mult
    flops = siglip_mult * siglip * patches + 6 * projector * patches + train_mult * gemma * seq
    vis_attn = 4 * patches**2 * vlm.vision.width * vlm.vision.depth
    llm_attn = 4 * seq**2 * llm.num_heads * llm.head_dim * llm.depth
    flops += vis_attn * (siglip_mult // 2) + llm_attn * (train_mult // 2)
    dit_tokens = dit.num_tokens * policy_cfg.repeats
    dit_mult = 6 + (2 if dit.remat else 0)
    flops += dit_mult * _size(params["action_model"]) * dit_tokens
    flops += 4 * dit.num_tokens**2 * dit.width * dit.depth * policy_cfg.repeats * (dit_mult // 2)
    return float(flops)


class StepTimer:
    """Wall time per step over a window, examples/s, ETA and MFU."""

    def __init__(self, total_steps: int, global_batch: int, flops_per_step: float, num_devices: int,
                 peak: float | None):
        self.total, self.batch, self.flops, self.devices, self.peak = (total_steps, global_batch, flops_per_step,
                                                                       num_devices, peak)
        self._t, self._step = None, None

    def start(self, step: int) -> None:
        self._t, self._step = time.perf_counter(), step

    def measure(self, step: int) -> dict[str, float]:
        """Figures since the last call (or `start`), then restarts the window."""
        now = time.perf_counter()
        steps = max(step - self._step, 1)
        dt = (now - self._t) / steps
        self._t, self._step = now, step
        out = {"step_time_s": dt, "examples_per_s": self.batch / dt, "eta_s": dt * max(self.total - step, 0),
               "tflops_per_device": self.flops / dt / self.devices / 1e12}
        if self.peak:
            out["mfu"] = self.flops / dt / (self.devices * self.peak)
        return out


class MetricWriter:
    """Scalars to TensorBoard event files (tensorboardX) on process 0; no-op elsewhere."""

    def __init__(self, logdir: str | None):
        self._w = None
        if logdir is not None and jax.process_index() == 0:
            from tensorboardX import SummaryWriter
            self._w = SummaryWriter(logdir, flush_secs=30)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._w is not None:
            for k, v in values.items():
                self._w.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self._w is not None:
            self._w.close()


def format_line(step: int, total: int, values: dict[str, float]) -> str:
    """One human-readable log line."""
    parts = [f"step {step}/{total}"]
    for k in ("loss", "val_loss", "grad_norm", "lr_backbone", "lr_action", "step_time_s", "examples_per_s",
              "mfu", "eta_s"):
        if k in values:
            v = values[k]
            parts.append(f"{k} {v:.4g}" if k != "eta_s" else f"eta {v / 60:.1f} min")
    return "  ".join(parts)
