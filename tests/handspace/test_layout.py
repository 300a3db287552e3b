import numpy as np
import pytest

from vitra_jax.handspace import layout


def test_slices_partition_the_102_dims():
    covered = np.zeros(layout.ACTION_DIM, int)
    for sl, _ in layout.LOSS_COMPONENTS.values():
        covered[sl] += 1
    np.testing.assert_array_equal(covered, 1)
    assert layout.hand_part("right", layout.TRANS) == slice(51, 54)
    assert layout.hand_part("left", layout.FINGERS) == slice(6, 51)


def test_swap_hands_and_mask_expansion():
    x = np.arange(102.0)
    s = layout.swap_hands(x)
    np.testing.assert_array_equal(s[:51], x[51:])
    np.testing.assert_array_equal(layout.swap_hands(s), x)
    m = layout.expand_hand_mask(np.array([[True, False]]))
    assert m.shape == (1, 102) and m[0, :51].all() and not m[0, 51:].any()


def test_pad_to_official_layout():
    x = np.ones((16, 102))
    p = layout.pad_to(x, layout.OFFICIAL_ACTION_DIM)
    assert p.shape == (16, 192) and p[:, :102].all() and not p[:, 102:].any()
    with pytest.raises(ValueError, match="cannot pad"):
        layout.pad_to(np.ones(200), 192)
