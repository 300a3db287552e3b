"""Camera image -> model image for the deploy policy, in one of two modes.

'squash': the training preprocessing (`vitra_jax.data.observation.model_image`: bicubic squash to the VLM size,
scaled to [-1, 1]). 'official': the release's inference path, which first resizes the short side to 224 with
Lanczos (`resize_short_side_to_target` in its `data_utils.py`: the long side becomes int(long · 224 / short))
and then lets the PaliGemma processor squash it the same way.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
from PIL import Image

from vitra_jax.data.observation import model_image

OFFICIAL_SHORT_SIDE = 224


def resize_short_side(image: np.ndarray, target: int = OFFICIAL_SHORT_SIDE) -> np.ndarray:
    """uint8 (H, W, 3) resized with Lanczos so its short side is `target`, aspect kept (long side truncated)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    size = (target, int(h * target / w)) if w < h else (int(w * target / h), target)
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def prepare_image(image: np.ndarray, image_size: int, mode: str) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (image_size, image_size, 3) in [-1, 1] by `mode` ('squash' | 'official')."""
    if mode == "official":
        image = resize_short_side(image)
    elif mode != "squash":
        raise ValueError(f"unknown preprocess mode {mode!r}; choose 'squash' or 'official'")
    return model_image(image, image_size)


def prepare_images(images: list[np.ndarray], image_size: int, mode: str, pool: Executor | None = None) -> np.ndarray:
    """`prepare_image` of each camera image, stacked (B, S, S, 3); with `pool`, in its threads (Pillow drops the
    GIL while resizing). A bad image raises ValueError naming its index ('observation i')."""
    def one(i: int, image: np.ndarray) -> np.ndarray:
        try:
            return prepare_image(image, image_size, mode)
        except ValueError as e:
            raise ValueError(f"observation {i}: {e}") from None

    run = pool.map if pool is not None and len(images) > 1 else map
    return np.stack(list(run(one, range(len(images)), images)))
