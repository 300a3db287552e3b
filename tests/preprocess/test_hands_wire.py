"""Framed messages between the pipeline and its worker processes."""

import io
import struct

import numpy as np
import pytest

from preprocess.hands import wire


def test_round_trip_keeps_header_and_arrays_exactly():
    frames = np.random.default_rng(0).integers(0, 255, (2, 4, 5, 3), dtype=np.uint8)
    score = np.array([[0.5, np.nan]], np.float32)
    buf = io.BytesIO()
    wire.send(buf, {"op": "detect", "n": 2}, frames, score)
    wire.send(buf, {"op": "close"})
    buf.seek(0)
    header, arrays = wire.receive(buf)
    assert header == {"op": "detect", "n": 2}
    np.testing.assert_array_equal(arrays[0], frames)
    assert arrays[0].dtype == np.uint8
    np.testing.assert_array_equal(arrays[1], score)
    assert wire.receive(buf) == ({"op": "close"}, [])


def test_layout_is_count_then_length_prefixed_parts():
    buf = io.BytesIO()
    wire.send(buf, {"a": 1}, np.arange(3, dtype=np.int16))
    raw = buf.getvalue()
    assert struct.unpack("<I", raw[:4]) == (2,)
    (n,) = struct.unpack("<Q", raw[4:12])
    assert raw[12:12 + n] == b'{"a": 1}'
    (m,) = struct.unpack("<Q", raw[12 + n:20 + n])
    assert raw[20 + n:20 + n + 6] == b"\x93NUMPY" and len(raw) == 20 + n + m


def test_object_arrays_are_refused_and_truncation_is_reported():
    with pytest.raises(ValueError):
        wire.send(io.BytesIO(), {}, np.array([{"x": 1}], dtype=object))
    buf = io.BytesIO()
    wire.send(buf, {"op": "detect"}, np.zeros(10))
    with pytest.raises(wire.WireError, match="stream closed"):
        wire.receive(io.BytesIO(buf.getvalue()[:-5]))
