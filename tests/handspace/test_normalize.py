import json

import numpy as np
import pytest

from vitra_jax.handspace.normalize import GaussianNormalizer


def _normalizer(seed=0):
    rng = np.random.default_rng(seed)
    return GaussianNormalizer(rng.normal(size=102), rng.uniform(0.1, 2, 102), rng.normal(size=102),
                              rng.uniform(0.1, 2, 102))


def test_normalize_formula_and_roundtrip():
    n = _normalizer()
    x = np.random.default_rng(1).normal(size=(16, 102))
    y = n.normalize_action(x)
    np.testing.assert_allclose(y, (x - n.action_mean) / (n.action_std + 1e-7))
    np.testing.assert_allclose(n.unnormalize_action(y), x, atol=1e-12)
    s = np.random.default_rng(2).normal(size=102)
    np.testing.assert_allclose(n.unnormalize_state(n.normalize_state(s)), s, atol=1e-12)
    np.testing.assert_allclose(n.normalize_state(n.state_mean), 0.0)


def test_save_load(tmp_path):
    n = _normalizer()
    path = tmp_path / "stats.json"
    n.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]
    m = GaussianNormalizer.load(path)
    for f in ("action_mean", "action_std", "state_mean", "state_std"):
        np.testing.assert_array_equal(getattr(m, f), getattr(n, f))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="action_std"):
        GaussianNormalizer(np.zeros(102), np.ones(101), np.zeros(102), np.ones(102))
    d = _normalizer().to_dict()
    del d["state"]["std"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(KeyError, match="state.std"):
        GaussianNormalizer.load(path)
    with pytest.raises(FileNotFoundError):
        GaussianNormalizer.load(tmp_path / "missing.json")
