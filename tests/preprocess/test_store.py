"""Run store: records round-trip field by field, files are plain npz/json, a result counts only once its
`done` marker is written, failures carry reasons, unknown types are refused."""

import json

import numpy as np
import pytest

from preprocess import records, store
from vitra_jax.handspace.trajectory import HandTrack


def _cam_hands(rng) -> records.CamHands:
    def hand(t):
        return records.CamHand(kept=rng.random(t) > 0.3, wrist=rng.normal(size=(t, 3)),
                               orient=rng.normal(size=(t, 3, 3)), hand_pose=rng.normal(size=(t, 15, 3, 3)),
                               joints=rng.normal(size=(t, 21, 3)), beta=rng.normal(size=10),
                               score=rng.random(t).astype(np.float32))
    return records.CamHands(hands={"left": hand(7), "right": hand(7)}, backend="mediapipe", version="0.10.21")


def test_nested_records_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    s = store.Store(tmp_path)
    value = {"hands": _cam_hands(rng),
             "segments": [records.Segment("left", 3, 40), records.Segment("right", 0, 12)],
             "dropped": (records.Dropped("left", 40, 44, "too_short"),),
             "k": records.Intrinsics(k=np.eye(3) * 2.5, width=640, height=480, source="fov_prior",
                                     distortion={"model": "omnidir", "xi": 0.5, "d": np.arange(4.0)}),
             "track": HandTrack(wrist=rng.normal(size=(2, 3)), orient=np.eye(3)[None].repeat(2, 0),
                                hand_pose=np.zeros((2, 15, 3, 3)), joints=np.zeros((2, 21, 3)),
                                kept=np.array([True, False]), beta=np.zeros(10)),
             "fps": np.float64(29.97), "none": None}
    s.save("work/v/clip0000/stage", value)
    got = s.load("work/v/clip0000/stage")
    assert set(got) == set(value)
    for hand in ("left", "right"):
        a, b = value["hands"].hands[hand], got["hands"].hands[hand]
        for f in ("kept", "wrist", "orient", "hand_pose", "joints", "beta", "score"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
            assert getattr(a, f).dtype == getattr(b, f).dtype
    assert got["hands"].backend == "mediapipe" and got["hands"].version == "0.10.21"
    assert got["segments"] == [records.Segment("left", 3, 40), records.Segment("right", 0, 12)]
    assert got["dropped"] == (records.Dropped("left", 40, 44, "too_short"),)
    assert isinstance(got["k"], records.Intrinsics) and got["k"].width == 640 and got["k"].source == "fov_prior"
    np.testing.assert_array_equal(got["k"].k, np.eye(3) * 2.5)
    np.testing.assert_array_equal(got["k"].distortion["d"], np.arange(4.0))
    assert got["k"].distortion["xi"] == 0.5 and got["k"].distortion["model"] == "omnidir"
    assert isinstance(got["track"], HandTrack) and got["track"].kept.tolist() == [True, False]
    assert got["fps"] == 29.97 and type(got["fps"]) is float and got["none"] is None

    # The files are plain npz + json (no pickle) and no `{stem}.npz`+`{stem}.json` pair (not an episode).
    base = tmp_path / "work/v/clip0000"
    assert sorted(p.name for p in base.iterdir()) == ["stage.arrays.npz", "stage.done", "stage.record.json"]
    with np.load(base / "stage.arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    tree = json.loads((base / "stage.record.json").read_text())
    wrist_ref = tree["__dict__"]["hands"]["fields"]["hands"]["__dict__"]["right"]["fields"]["wrist"]["__array__"]
    np.testing.assert_array_equal(arrays[wrist_ref], value["hands"].hands["right"].wrist)


def test_equal_records_give_equal_bytes(tmp_path):
    a = _cam_hands(np.random.default_rng(1))
    b = _cam_hands(np.random.default_rng(1))
    assert store.dumps(a) == store.dumps(b)
    s1, s2 = store.Store(tmp_path / "1"), store.Store(tmp_path / "2")
    s1.save("x", a)
    s2.save("x", b)
    for name in ("x.arrays.npz", "x.record.json"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


def test_interrupted_save_leaves_no_finished_result(tmp_path, monkeypatch):
    s = store.Store(tmp_path)
    old = records.Segment("left", 0, 10)
    s.save("seg", old)
    real_write = store.atomic_write
    calls = []

    def crash_after_arrays(path, data):  # the process dies once the npz is in place
        calls.append(path.name)
        if path.name.endswith(".record.json"):
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(store, "atomic_write", crash_after_arrays)
    with pytest.raises(KeyboardInterrupt):
        s.save("new", records.Segment("right", 5, 9))
    assert not s.done("new") and calls == ["new.arrays.npz", "new.record.json"]
    with pytest.raises(store.StoreError, match="no finished result 'new'"):
        s.load("new")
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temp file left behind
    assert s.load("seg") == old  # what was already written is intact
    monkeypatch.setattr(store, "atomic_write", real_write)
    s.save("new", records.Segment("right", 5, 9))  # the rerun completes it
    assert s.load("new") == records.Segment("right", 5, 9)


def test_failures_are_recorded_and_cleared_by_a_later_success(tmp_path):
    s = store.Store(tmp_path)
    s.fail("work/v/probe", "unreadable_video", "cannot decode v.mp4")
    assert s.failure("work/v/probe") == {"reason": "unreadable_video", "detail": "cannot decode v.mp4"}
    assert not s.done("work/v/probe")
    s.save("work/v/probe", records.Segment("left", 0, 1))
    assert s.failure("work/v/probe") is None and s.done("work/v/probe")


def test_unknown_types_and_object_arrays_are_refused(tmp_path):
    s = store.Store(tmp_path)

    class Other:
        pass

    with pytest.raises(TypeError, match="type Other"):
        s.save("a", {"x": Other()})
    with pytest.raises(TypeError, match="object array"):
        s.save("b", np.array([{"a": 1}], dtype=object))
    with pytest.raises(TypeError, match="non-string keys"):
        s.save("c", {1: 2})
    (tmp_path / "d.arrays.npz").write_bytes(store.dumps(1)[0])
    (tmp_path / "d.record.json").write_text(json.dumps({"__record__": "os.system", "fields": {}}))
    (tmp_path / "d.done").write_text("ok\n")
    with pytest.raises(store.StoreError, match="unknown record type 'os.system'"):
        s.load("d")
