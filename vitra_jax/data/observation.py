"""Model inputs from one raw observation, shared by the training loader and `vitra_jax.inference.prepare_observation`.

One implementation of the two steps both paths must do identically: the image squashed (no aspect
preservation) to the VLM's square size with bicubic resampling and scaled to [-1, 1], as the PaliGemma
processor does; states and actions normalized (VITRA §2.7: `(x - mean) / (std + 1e-7)`), then multiplied by
their masks so masked entries are exactly 0 in normalized space. The way back, shared by the JAX and the torch
inference, is `action_outputs`. Numpy, Pillow and `vitra_jax.handspace` only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from vitra_jax.handspace import layout
from vitra_jax.handspace.trajectory import integrate_actions


def model_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB (H, W, 3) -> float32 (size, size, 3) in [-1, 1], bicubic squash resize (Pillow)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[:2] != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return image.astype(np.float32) / 127.5 - 1.0


def normalized_state(normalizer: Any, state: np.ndarray, state_mask: np.ndarray) -> np.ndarray:
    """(102,) state normalized, then masked: float32."""
    mask = np.asarray(state_mask, np.float32)
    return (np.asarray(normalizer.normalize_state(state), np.float32) * mask).astype(np.float32)


def normalized_actions(normalizer: Any, actions: np.ndarray, action_mask: np.ndarray) -> np.ndarray:
    """(N, 102) actions normalized, then masked: float32."""
    mask = np.asarray(action_mask, np.float32)
    return (np.asarray(normalizer.normalize_action(actions), np.float32) * mask).astype(np.float32)


def action_outputs(normalizer: Any, normalized: np.ndarray, action_mask: np.ndarray,
                   state: np.ndarray) -> dict[str, np.ndarray]:
    """Sampled normalized action chunks (S, N, A) float64 -> {"normalized", "actions": (S, N, 102) unnormalized
    and masked, "trajectory": (S, N+1, 102) integrated per sample from the raw `state`}, float64."""
    actions = (normalizer.unnormalize_action(normalized[..., :layout.ACTION_DIM])
               * np.asarray(action_mask, np.float64))
    state = np.asarray(state, np.float64)
    traj = np.stack([integrate_actions(state, a) for a in actions])
    return {"normalized": normalized, "actions": actions, "trajectory": traj}
