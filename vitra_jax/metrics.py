"""Training figures: analytic FLOPs per example, MFU, step timing, and a TensorBoard + stdout writer.

FLOPs are counted analytically because XLA's `cost_analysis()` counts a scanned layer stack once. Only matrix
products count (2 FLOPs per multiply-add); per example and training step, with P the weights a row passes
through and n the rows that do:
  trained module, forward + backward  6·P·n
  frozen module (SigLIP), forward     2·P·n  (no gradient flows into the image encoder)
plus attention score/value products (4·n²·H·Dh per layer forward; ×3 with backward). Rows: SigLIP and the
projector see the patches, Gemma-2 the prefix (patches + text + FoV + cognition); per DiT noise draw the blocks
and output layer see the chunk + 2 tokens, the action embedder the chunk, and the conditioning layers (z, t
and state embedders, every AdaLN) one row. A layer whose input needs no gradient (the projector under a frozen
SigLIP, the patch embedding, the first layers of the FoV encoder and of the action, state and timestep
embedders) costs 4·P·n. Embedding lookups cost nothing; the LM head is never computed in training.
These are model FLOPs, the numerator of MFU; `recompute=True` adds what rematerialisation repeats in the
backward pass (hardware FLOPs, for HFU), by the layers' remat policy (`RECOMPUTED`).
tests/test_flop_count.py checks the count against the matrix products in the train step's jaxpr.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import jax
import numpy as np

# Dense bf16 peak FLOP/s per device, from vendor spec sheets.
# Dense bf16 peaks by device kind, matched in this order (JAX calls a v5p "TPU v5", a v5e "TPU v5 lite").
PEAK_FLOPS = {"h100 pcie": 756e12, "h100": 989e12, "h200": 989e12, "gh200": 989e12, "a100": 312e12,
              "l40s": 362e12, "rtx 4090": 165e12, "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12,
              "tpu v5p": 459e12, "tpu v5": 459e12, "tpu v6 lite": 918e12, "tpu v6e": 918e12}


def peak_flops(device: jax.Device | None = None) -> float | None:
    """Peak bf16 FLOP/s of a device kind, or None where unknown (e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind.lower()
    for name, flops in PEAK_FLOPS.items():
        if name in kind:
            return flops
    return None


def _matmul_weights(tree: Any) -> int:
    """Weights that enter matrix products (and the patch convolution): Dense `kernel`s, Gemma's einsum `w`s and
    its MLP's `gating_einsum` / `linear`; biases, norm scales and positional embeddings multiply nothing."""
    from flax import traverse_util

    flat = traverse_util.flatten_dict(tree) if tree else {}
    names = ("kernel", "w", "gating_einsum", "linear")
    return int(sum(np.prod(v.shape) for k, v in flat.items() if k[-1] in names))


# What a remat policy recomputes of a layer's matrix products: all of them, only the batched ones (attention's
# score and value products), or none. A policy not listed here has no hardware-FLOP count.
RECOMPUTED = {"none": "none", "everything_saveable": "none", "dots_saveable": "none", "checkpoint_dots": "none",
              "dots_with_no_batch_dims_saveable": "attention", "checkpoint_dots_with_no_batch_dims": "attention",
              "nothing_saveable": "all"}


def _dit_flops(dit_cfg: Any, dit_params: Any, recompute: bool) -> float:
    """Training FLOPs of the DiT for one noise draw of one example."""
    from flax import traverse_util

    w = {"/".join(k[:-1]): int(np.prod(v.shape)) for k, v in traverse_util.flatten_dict(dit_params).items()
         if k[-1] == "kernel"}
    tokens, chunk = dit_cfg.num_tokens, dit_cfg.chunk_len
    blocks = (sum(w[f"blocks/{n}"] for n in ("qkv", "proj", "mlp_fc1", "mlp_fc2")) * tokens + w["blocks/adaLN"]
              + 2 * tokens**2 * dit_cfg.width * dit_cfg.depth)  # multiply-adds of one forward
    # layers whose input carries no gradient (noisy actions, state, timestep features) skip the input
    # gradient: forward + weight gradient only
    first = w["x_embedder_fc1"] * chunk + w["state_embedder_fc1"] + w["t_embedder_fc1"]
    rest = (w["x_embedder_fc2"] * chunk + w["state_embedder_fc2"] + w["state_embedder_fc3"] + w["t_embedder_fc2"]
            + w["z_embedder"] + w["final_adaLN"] + w["final_linear"] * tokens)
    return 2.0 * ((3 + (recompute and dit_cfg.remat)) * blocks + 2 * first + 3 * rest)


def flops_per_example(policy_cfg: Any, params: Any, text_len: int, *, recompute: bool = False) -> float:
    """Training FLOPs of one example (all R noise draws) for a `PolicyConfig` and its (abstract) params: model
    FLOPs, or with `recompute` also the forward passes rematerialisation repeats."""
    vlm, llm = policy_cfg.vlm, policy_cfg.vlm.llm
    img = params["vlm"]["img"]
    patches = vlm.num_image_tokens
    siglip = _matmul_weights({k: v for k, v in img.items() if k != "head"})
    projector = _matmul_weights(img.get("head", {}))
    gemma = _matmul_weights({k: v for k, v in params["vlm"]["llm"].items() if k != "embedder"})
    seq = patches + text_len + 2
    redo = "none"
    if recompute:
        if vlm.remat_policy not in RECOMPUTED:
            raise ValueError(f"no hardware-FLOP count for remat policy {vlm.remat_policy!r}; known: "
                             f"{sorted(RECOMPUTED)}")
        redo = RECOMPUTED[vlm.remat_policy]
    frozen = policy_cfg.freeze_vision
    patch_embed = _matmul_weights(img["embedding"])
    vis_attn = 2 * patches**2 * vlm.vision.width * vlm.vision.depth  # multiply-adds of one forward
    llm_attn = 2 * seq**2 * llm.num_heads * llm.head_dim * llm.depth

    def trained(weights_rows: float, attention: float, kept: float = 0.0) -> float:
        """Forward, backward (×2) and what remat recomputes; `kept`: products whose outputs the backward never
        needs, so remat does not redo them."""
        return 2 * (3 * (weights_rows + attention) + (redo == "all") * (weights_rows - kept)
                    + (redo != "none") * attention)

    # no input gradient into the pixels, nor into a frozen SigLIP from the projector
    if frozen:
        flops = 2 * (siglip * patches + vis_attn) + 4 * projector * patches
    else:
        # SigLIP's blocks end in the MLP's output projection, added straight to the residual that the layer scan
        # keeps; Gemma-2's post-norms need every product's output. The patch embedding is not rematerialised.
        mlp_out = _matmul_weights(img["Transformer"]["encoderblock"]["MlpBlock_0"]["Dense_1"])
        flops = trained((siglip - patch_embed) * patches, vis_attn, kept=mlp_out * patches)
        flops += 4 * patch_embed * patches + 6 * projector * patches
    flops += trained(gemma * seq, llm_attn)
    fov = params["fov_encoder"]
    flops += 4 * _matmul_weights(fov["fc1"]) + 6 * _matmul_weights(fov["fc2"])  # one row: FoV (2,) -> token
    flops += _dit_flops(policy_cfg.dit, params["action_model"], recompute) * policy_cfg.repeats
    return float(flops)


class StepTimer:
    """Wall time per step over a window, examples/s, ETA and MFU."""

    def __init__(self, total_steps: int, global_batch: int, flops_per_step: float, num_devices: int,
                 peak: float | None):
        self.total, self.batch, self.flops, self.devices, self.peak = (total_steps, global_batch, flops_per_step,
                                                                       num_devices, peak)
        self._t, self._step = None, None

    def start(self, step: int) -> None:
        """The window starts now, after `step`."""
        self._t, self._step = time.perf_counter(), step

    def restart(self) -> None:
        """The window starts now, at the same step: time spent since (e.g. validation) is not counted."""
        self._t = time.perf_counter()

    def measure(self, step: int) -> dict[str, float]:
        """Figures since the last call (or `start`), then restarts the window; none before a step has run."""
        if step <= self._step:
            return {}
        now = time.perf_counter()
        steps = step - self._step
        dt = (now - self._t) / steps
        self._t, self._step = now, step
        out = {"step_time_s": dt, "examples_per_s": self.batch / dt, "eta_s": dt * max(self.total - step, 0),
               "tflops_per_device": self.flops / dt / self.devices / 1e12}
        if self.peak:
            out["mfu"] = self.flops / dt / (self.devices * self.peak)
        return out


def trim_log(path: pathlib.Path, last_step: int) -> None:
    """Drops the lines of `metrics.jsonl` after `last_step`: a killed run logged steps its resumed run redoes."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                keep.append(line)
        except json.JSONDecodeError:  # the half-written last line of a killed process
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{line}\n" for line in keep))
    os.replace(tmp, path)


class MetricWriter:
    """Scalars to TensorBoard event files (tensorboardX) on process 0; no-op elsewhere.

    A run resumed from the checkpoint at step `resumed_from` marks its event file so that TensorBoard drops what
    the killed run logged after that step (a `SessionLog.START` at `resumed_from + 1`: `purge_step`). Each file
    name ends in the nanosecond it was opened: tensorboardX names files by the second, and a second writer in the
    same second would overwrite the first's file, where now it sorts after it.
    """

    def __init__(self, logdir: str | None, resumed_from: int = 0):
        self._w = None
        if logdir is not None and jax.process_index() == 0:
            from tensorboardX import SummaryWriter
            self._w = SummaryWriter(logdir, flush_secs=30, purge_step=resumed_from + 1 if resumed_from else None,
                                    filename_suffix=f".{time.time_ns()}")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._w is not None:
            for k, v in values.items():
                self._w.add_scalar(k, float(v), step)

    def flush(self) -> None:
        if self._w is not None:
            self._w.flush()

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
