"""The 102-d hand action and state layouts shared by every stage (numpy only).

Action, per chunk step k anchored at frame t (all in the camera frame of t), per hand:
  [Δt (3, metres) | Δr (3, Euler xyz of R_{k+1} R_kᵀ) | θ (45, Euler xyz of the 15 MANO joints at k+1)]
State at t, per hand:
  [wrist position (3, camera t) | wrist orientation (3, Euler xyz) | θ (45)]
Both are laid out `[left 0:51 | right 51:102]`. The official release pads these to 192 (action) and 212
(state) dims; that padding exists only at the checkpoint import/export boundary.
"""

from __future__ import annotations

import numpy as np

CHUNK_LEN = 16
HAND_DIM = 51
ACTION_DIM = 2 * HAND_DIM
STATE_DIM = 2 * HAND_DIM
NUM_FINGER_JOINTS = 15
HANDS = ("left", "right")

# Offsets inside one hand's 51-d block.
TRANS = slice(0, 3)
ROT = slice(3, 6)
WRIST = slice(0, 6)
FINGERS = slice(6, 51)

# Official padded sizes (import/export boundary only).
OFFICIAL_ACTION_DIM = 192
OFFICIAL_STATE_DIM = 212


def hand_slice(hand: str) -> slice:
    """The 51-d block of `hand` ('left' or 'right') inside a 102-d vector."""
    i = HANDS.index(hand)
    return slice(i * HAND_DIM, (i + 1) * HAND_DIM)


def hand_part(hand: str, part: slice) -> slice:
    """Absolute slice of `part` (TRANS/ROT/WRIST/FINGERS) of `hand` in a 102-d vector."""
    base = HANDS.index(hand) * HAND_DIM
    return slice(base + part.start, base + part.stop)


# Loss components (VITRA §III-C; official `get_loss_components('angle')`): name -> (slice, kind).
# `kind` selects the weight: 'wrist' (translation + rotation) or 'fingers'.
LOSS_COMPONENTS: dict[str, tuple[slice, str]] = {
    "left_wrist": (hand_part("left", WRIST), "wrist"),
    "left_fingers": (hand_part("left", FINGERS), "fingers"),
    "right_wrist": (hand_part("right", WRIST), "wrist"),
    "right_fingers": (hand_part("right", FINGERS), "fingers"),
}

# Component weights by kind: human data weighs all parts equally; robot fine-tuning (XHand) favours the wrist.
HUMAN_LOSS_WEIGHTS = {"wrist": 1.0, "fingers": 1.0}
ROBOT_LOSS_WEIGHTS = {"wrist": 1.6, "fingers": 0.4}
LOSS_WEIGHTS = {"human": HUMAN_LOSS_WEIGHTS, "robot": ROBOT_LOSS_WEIGHTS}  # by the release's `loss_type`


def expand_hand_mask(hand_mask: np.ndarray) -> np.ndarray:
    """Per-hand booleans (..., 2) -> per-dimension mask (..., 102)."""
    hand_mask = np.asarray(hand_mask, dtype=bool)
    return np.repeat(hand_mask, HAND_DIM, axis=-1)


def swap_hands(x: np.ndarray) -> np.ndarray:
    """Swap the left and right 51-d blocks of (..., 102) arrays (used by horizontal flips)."""
    x = np.asarray(x)
    return np.concatenate([x[..., HAND_DIM:], x[..., :HAND_DIM]], axis=-1)


def pad_to(x: np.ndarray, dim: int) -> np.ndarray:
    """Zero-pad the last axis of a 102-d array to the official padded size `dim`."""
    x = np.asarray(x)
    if x.shape[-1] > dim:
        raise ValueError(f"cannot pad last axis of size {x.shape[-1]} down to {dim}")
    pad = [(0, 0)] * (x.ndim - 1) + [(0, dim - x.shape[-1])]
    return np.pad(x, pad)
