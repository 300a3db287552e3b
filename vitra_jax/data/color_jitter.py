"""Colour jitter of the VITRA augmentation (release `apply_color_augmentation`), numpy + OpenCV only.

Brightness, contrast, saturation and hue, with a small hue range when the caption names a colour (so "the
red cup" stays red). Each step is a per-channel function of a uint8 value, so it runs as lookup tables that
reproduce the release's float32 arithmetic byte for byte.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

# Release list (`contains_color_word`): a caption naming one of these keeps the hue nearly fixed.
COLOR_WORDS = (
    "red", "green", "blue", "yellow", "orange", "purple", "pink", "black", "white", "gray", "grey", "brown",
    "cyan", "magenta", "gold", "silver", "beige", "maroon", "violet", "indigo", "turquoise", "navy", "olive",
    "teal", "lime", "ivory", "bluish", "reddish",
)
_COLOR_RE = re.compile(r"\b(" + "|".join(COLOR_WORDS) + r")\b", re.IGNORECASE)


def has_color_word(text: str) -> bool:
    """Whether `text` names a colour of `COLOR_WORDS` as a whole word (any case)."""
    return _COLOR_RE.search(text) is not None


def jitter_image(image: np.ndarray, brightness: float, contrast: float, saturation: float,
                 hue: float) -> np.ndarray:
    """RGB uint8 image with brightness added (in [0, 1] units), contrast scaled about 0.5, HSV saturation
    scaled and hue shifted by `hue` OpenCV units (release `apply_color_augmentation`, as lookup tables)."""
    v = np.arange(256, dtype=np.float32) / 255.0
    v = np.clip(v + np.float32(brightness), 0.0, 1.0)
    v = np.clip((v - 0.5) * np.float32(contrast) + 0.5, 0.0, 1.0)
    hsv = cv2.cvtColor(cv2.LUT(image, (v * 255).astype(np.uint8)), cv2.COLOR_RGB2HSV)
    levels = np.arange(256, dtype=np.float32)
    lut = np.stack([((levels + np.float32(hue)) % 180).astype(np.uint8),
                    np.clip(levels * np.float32(saturation), 0, 255).astype(np.uint8),
                    levels.astype(np.uint8)], axis=-1)[None]
    return cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2RGB)


def color_jitter(image: np.ndarray, caption: str, rng: np.random.Generator, p: float = 0.8,
                 brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.4, hue: float = 0.3,
                 hue_color_word: float = 0.04) -> np.ndarray:
    """With probability p: brightness ± `brightness`, contrast and saturation × (1 ± ...), hue ± `hue`·180
    OpenCV units, or ± `hue_color_word`·180 when `caption` names a colour (release values as defaults)."""
    if rng.random() >= p:
        return image
    bound = hue_color_word if has_color_word(caption) else hue
    return jitter_image(image, rng.uniform(-brightness, brightness), rng.uniform(1 - contrast, 1 + contrast),
                        rng.uniform(1 - saturation, 1 + saturation), rng.uniform(-bound, bound) * 180)
