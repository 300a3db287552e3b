"""big_vision npz import (bf16 as void2), our checkpoint format, and the PaliGemma convert CLI."""

import numpy as np
import pytest
import ml_dtypes

from tests.factories import save_tiny_hf, tiny_config
from vitra_jax.weights import convert, hf, names, npz


@pytest.fixture(scope="module")
def tiny_params():
    import jax
    import jax.numpy as jnp

    from vitra_jax.models.paligemma import PaliGemma

    cfg = tiny_config()
    s = cfg.image_size
    p = PaliGemma(cfg).init(jax.random.key(0), jnp.zeros((1, s, s, 3)), jnp.zeros((1, 2), jnp.int32),
                            jnp.ones((1, 2), bool))["params"]
    return cfg, jax.tree.map(np.asarray, p)


def write_bigvision(path, flat):
    """As big_vision ships them: `params/` prefix, bf16 stored as void2."""
    np.savez(path, **{f"params/{k}": v.astype(ml_dtypes.bfloat16).view("V2") for k, v in flat.items()})


def test_bigvision_npz_bf16_void(tiny_params, tmp_path):
    cfg, params = tiny_params
    flat = names.flatten(params)
    write_bigvision(tmp_path / "pg.npz", flat)
    assert np.load(tmp_path / "pg.npz")["params/llm/final_norm/scale"].dtype == np.dtype("V2")
    loaded = names.flatten(npz.load_bigvision_npz(tmp_path / "pg.npz", cfg))
    for k, v in flat.items():
        assert loaded[k].dtype == np.float32
        np.testing.assert_array_equal(loaded[k], v.astype(ml_dtypes.bfloat16).astype(np.float32))
    del flat["img/head/bias"]
    write_bigvision(tmp_path / "bad.npz", flat)
    with pytest.raises(KeyError, match="img/head/bias"):
        npz.load_bigvision_npz(tmp_path / "bad.npz", cfg)


def test_convert_cli_hf_round_trip_and_no_partial_output(tmp_path):
    src = save_tiny_hf(tmp_path / "hf")
    convert.main(["--from", "hf", "--src", str(src), "--out", str(tmp_path / "ours")])
    cfg, params = npz.load_checkpoint(tmp_path / "ours")
    assert cfg == hf.load_hf_paligemma(src)[0]
    convert.main(["--to", "hf", "--src", str(tmp_path / "ours"), "--out", str(tmp_path / "back")])
    a, b = hf.read_safetensors(src), hf.read_safetensors(tmp_path / "back")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="img/Transformer/encoder_norm/bias"):  # tiny shapes vs 3b
        convert.main(["--from", "bigvision", "--src", str(tmp_path / "ours" / "params.npz"),
                      "--config", "3b-224", "--out", str(tmp_path / "fail")])
    assert not (tmp_path / "fail").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "hf", "ours"]
