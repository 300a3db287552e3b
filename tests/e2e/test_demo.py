"""The README demo runs end to end (a few training steps) and writes its pictures."""

import numpy as np

from vitra_jax import demo


def test_demo_runs_end_to_end(tmp_path):
    results = demo.run(tmp_path, steps=30, batch_size=8, seed=0)
    assert np.isfinite(results["loss_start"]) and np.isfinite(results["loss_end"])
    assert results["loss_end"] < results["loss_start"]
    assert 0 < results["policy_error_m"] < 1.0 and 0 < results["still_error_m"] < 1.0
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert len(list(tmp_path.glob("prediction_*.png"))) == 6  # 2 val episodes x 3 frames
    assert (tmp_path / "statistics.json").is_file() and (tmp_path / "tokenizer" / "tokenizer.model").is_file()
