import numpy as np
import pytest

from vitra_jax.data.statistics import fit_normalizer, masked_mean_std


def test_masked_statistics_ignore_masked_entries():
    x = np.array([[1.0, 5.0, 7.0], [3.0, 100.0, 7.0], [5.0, -50.0, 7.0]])
    m = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0]])
    mean, std = masked_mean_std(x, m)
    np.testing.assert_allclose(mean, [3.0, 5.0, 0.0])
    np.testing.assert_allclose(std, [np.sqrt(8 / 3), 0.0, 1.0])


def test_fit_normalizer_whitens_valid_entries():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(50):
        a = rng.normal(2.0, 3.0, (16, 102))
        am = np.ones((16, 102))
        am[:, :51] = 0  # left hand never valid
        samples.append({"actions": a, "action_mask": am, "state": rng.normal(-1, 0.5, 102),
                        "state_mask": np.ones(102)})
    norm = fit_normalizer(samples)
    z = norm.normalize_action(np.stack([s["actions"] for s in samples]))[..., 51:]
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-6
    np.testing.assert_array_equal(norm.action_mean[:51], 0)
    np.testing.assert_array_equal(norm.action_std[:51], 1)
    with pytest.raises(ValueError, match="no samples"):
        fit_normalizer([])
