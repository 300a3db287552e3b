"""The README main job (configs/demo.py through the trainer, then vitra_jax.evaluate) at its fixed seed: the loss
falls clearly (windows of 100 steps 3 standard errors apart) and the policy beats a hand that stays still on
the held-out episodes by a clear margin, for the wrist and for the finger angles."""

import numpy as np

from configs import demo
from vitra_jax import evaluate, train


def test_demo_trains_and_beats_the_still_hand(tmp_path):
    config = demo.get_config()  # the whole README recipe (1200 steps, ~4 min on 2 cores)
    with config.unlocked():
        config.data.data_dir = str(tmp_path / "data")
    result = train.train(config, tmp_path / "run")
    losses = np.array([result["losses"][s] for s in sorted(result["losses"])])
    first, last = losses[:100], losses[-100:]
    sem = lambda x: x.std() / np.sqrt(len(x))  # noqa: E731
    assert last.mean() + 3 * sem(last) < first.mean() - 3 * sem(first), (first.mean(), last.mean())

    figures = evaluate.evaluate(tmp_path / "run")
    assert figures["pictures"] == 9  # 3 held-out episodes x frames 0, 4, 8
    assert figures["evaluated_hands"] == 138  # every valid hand of every held-out frame
    assert figures["policy_error_m"] < 0.8 * figures["still_error_m"], figures
    assert figures["policy_finger_error_deg"] < 0.6 * figures["still_finger_error_deg"], figures
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    assert len(list((tmp_path / "run").glob("prediction_ep*_t*.png"))) == 9
