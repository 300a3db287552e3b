"""Deploy image preprocessing: the release's short-side Lanczos resize, then the training squash."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from vitra_jax.data.observation import model_image
from vitra_jax.deploy.preprocess import prepare_image, prepare_images, resize_short_side


def _release_resize_short_side_to_target(image: Image.Image, target: int = 224) -> Image.Image:
    """`resize_short_side_to_target` of the release's `vitra/utils/data_utils.py`, written out."""
    w, h = image.size
    if w < h:
        new_w, new_h = target, int(h * target / w)
    else:
        new_h, new_w = target, int(w * target / h)
    return image.resize((new_w, new_h), Image.Resampling.LANCZOS)


@pytest.mark.parametrize("shape", [(300, 533, 3), (480, 270, 3), (100, 100, 3), (224, 301, 3)])
def test_official_resize_equals_the_release(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    want = np.asarray(_release_resize_short_side_to_target(Image.fromarray(image)))
    got = resize_short_side(image)
    assert got.shape == want.shape and min(got.shape[:2]) == 224
    np.testing.assert_array_equal(got, want)
    # official = that resize, then the PaliGemma squash; squash alone skips the Lanczos step
    np.testing.assert_array_equal(prepare_image(image, 32, "official"), model_image(want, 32))
    np.testing.assert_array_equal(prepare_image(image, 32, "squash"), model_image(image, 32))


def test_the_two_modes_differ_and_bad_input_is_named():
    image = np.random.default_rng(0).integers(0, 256, (300, 533, 3), dtype=np.uint8)
    assert np.abs(prepare_image(image, 224, "official") - prepare_image(image, 224, "squash")).max() > 0.05
    with pytest.raises(ValueError, match="unknown preprocess mode 'lanczos'"):
        prepare_image(image, 224, "lanczos")
    with pytest.raises(ValueError, match="image must be uint8"):
        resize_short_side(image.astype(np.float32))


@pytest.mark.parametrize("mode", ["squash", "official"])
def test_a_batch_in_threads_is_each_image_in_order(mode):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((300, 533, 3), (480, 270, 3), (64, 64, 3))]
    want = np.stack([model_image(resize_short_side(i) if mode == "official" else i, 32) for i in images])
    with ThreadPoolExecutor(2) as pool:
        np.testing.assert_array_equal(prepare_images(images, 32, mode, pool), want)
        bad = [images[0], images[1], images[2].astype(np.float32)]
        with pytest.raises(ValueError, match="observation 2: image must be uint8"):
            prepare_images(bad, 32, mode, pool)
    np.testing.assert_array_equal(prepare_images(images, 32, mode), want)
