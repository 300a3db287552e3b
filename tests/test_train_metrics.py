"""metrics: the step timer's windows (compilation and validation left out), the log trimmed on resume, the
peak FLOP/s of the device kinds JAX reports."""

import json
import time

import pytest

from vitra_jax import metrics


def test_timer_counts_only_the_steps_of_its_window():
    timer = metrics.StepTimer(total_steps=100, global_batch=8, flops_per_step=4e12, num_devices=2, peak=1e12)
    timer.start(1)  # after the first (compiling) step
    assert timer.measure(1) == {}  # no step has run in the window
    time.sleep(0.2)
    got = timer.measure(5)  # steps 2..5
    assert got["step_time_s"] == pytest.approx(0.05, rel=0.5)
    assert got["examples_per_s"] == pytest.approx(8 / got["step_time_s"])
    assert got["eta_s"] == pytest.approx(95 * got["step_time_s"])
    assert got["mfu"] == pytest.approx(4e12 / got["step_time_s"] / 2e12)
    time.sleep(0.3)  # validation
    timer.restart()
    time.sleep(0.05)
    assert timer.measure(6)["step_time_s"] < 0.2


def test_trim_log_drops_steps_after_the_resumed_one(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 7)) + '{"step": 7, "lo')
    metrics.trim_log(log, 4)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]
    metrics.trim_log(tmp_path / "none.jsonl", 4)  # a fresh run has none
    assert not (tmp_path / "none.jsonl").exists()


@pytest.mark.parametrize("kind, peak", [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12),
                                        ("NVIDIA H200", 989e12), ("TPU v4", 275e12), ("TPU v5 lite", 197e12),
                                        ("TPU v5", 459e12), ("TPU v5p", 459e12), ("TPU v6 lite", 918e12),
                                        ("cpu", None)])
def test_peak_flops_by_device_kind(kind, peak):
    class Device:
        device_kind = kind
    assert metrics.peak_flops(Device()) == peak


def _tensorboard_view(logdir) -> dict[str, dict[int, float]]:
    """Scalars as TensorBoard shows them: files in name order, and a `SessionLog.START` at step s drops every
    event read before it at step >= s (TensorBoard's event_accumulator purge rule, written out)."""
    import tensorflow as tf

    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if event.HasField("session_log") and event.session_log.status == event.session_log.START:
                events = [e for e in events if e[0] < event.step]
            for value in event.summary.value:
                events.append((event.step, value.tag, value.simple_value))
    view: dict[str, dict[int, float]] = {}
    for step, tag, value in events:
        assert step not in view.setdefault(tag, {}), f"{tag} at step {step} twice"
        view[tag][step] = value
    return view


def test_a_resumed_writer_hides_what_the_killed_run_logged_after_its_checkpoint(tmp_path):
    killed = metrics.MetricWriter(str(tmp_path))
    for step in range(1, 7):  # logged (and flushed) up to step 6; the checkpoint holds step 3
        killed.scalars(step, {"loss": float(step)})
    killed.flush()
    resumed = metrics.MetricWriter(str(tmp_path), resumed_from=3)  # within the same second as the first
    for step in range(4, 9):
        resumed.scalars(step, {"loss": 10.0 * step})
    resumed.close()
    killed.close()
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2  # the second file did not replace the first
    assert _tensorboard_view(tmp_path) == {"loss": {1: 1.0, 2: 2.0, 3: 3.0, 4: 40.0, 5: 50.0, 6: 60.0, 7: 70.0,
                                                    8: 80.0}}
