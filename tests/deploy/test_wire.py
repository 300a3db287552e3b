"""The server's msgpack wire format: arrays travel as ext type 1 = msgpack [dtype, shape, raw bytes], values
and dtypes survive a round trip, and malformed or unsafe payloads are refused with a naming error."""

import pickle

import msgpack
import numpy as np
import pytest

from vitra_jax.deploy import wire


def _ext(dtype: str, shape: list, data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb([dtype, shape, data], use_bin_type=True))


def test_array_layout_is_the_documented_one():
    arr = np.array([[1.5, -2.0, 3.25]], np.float32)
    raw = msgpack.unpackb(wire.encode({"a": arr}), raw=False, ext_hook=lambda c, d: (c, d))
    code, payload = raw["a"]
    assert code == 1
    # written out by hand: little-endian float32 bytes of 1.5, -2.0, 3.25
    expected = bytes.fromhex("0000c03f" "000000c0" "00005040")
    assert msgpack.unpackb(payload, raw=False) == ["<f4", [1, 3], expected]


def test_hand_built_message_decodes():
    msg = msgpack.packb({"x": _ext("<i2", [2, 2], bytes([1, 0, 2, 0, 255, 255, 0, 1])), "s": "hi", "n": None},
                        use_bin_type=True)
    out = wire.decode(msg)
    np.testing.assert_array_equal(out["x"], np.array([[1, 2], [-1, 256]]))
    assert out["x"].dtype == np.int16 and out["x"].flags.writeable
    assert out["s"] == "hi" and out["n"] is None


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int32", "int64", "uint16", "float16", "float32",
                                   "float64", "complex64", ">f4", ">i8"])
def test_round_trip_keeps_values_dtype_and_shape(dtype):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(3, 4, 2)) * 50).astype(dtype)
    base = np.dtype(dtype).newbyteorder("=")
    obj = {"arr": arr, "nested": [{"t": arr[:, ::2].T}, (1, 2.5, "x", b"raw", True, None)], "empty": arr[:0]}
    out = wire.decode(wire.encode(obj))
    for got, want in ((out["arr"], arr), (out["nested"][0]["t"], arr[:, ::2].T), (out["empty"], arr[:0])):
        assert got.shape == want.shape and got.dtype == base
        np.testing.assert_array_equal(got, want)
    assert out["nested"][1] == [1, 2.5, "x", b"raw", True, None]


def test_numpy_scalars_travel_as_zero_d_arrays():
    out = wire.decode(wire.encode({"a": np.float32(2.5), "b": np.int64(-3)}))
    assert out["a"].shape == () and out["a"].dtype == np.float32 and out["a"] == 2.5
    assert out["b"].dtype == np.int64 and out["b"] == -3


@pytest.mark.parametrize("arr", [np.array([object()], object), np.array(["ab"]), np.array([b"ab"]),
                                 np.array(["2020-01-01"], "datetime64[D]")])
def test_encode_refuses_non_numeric_arrays(arr):
    with pytest.raises(wire.WireError, match="cannot travel"):
        wire.encode({"a": arr})


def test_encode_refuses_unknown_objects():
    with pytest.raises(TypeError, match="cannot encode object of type set"):
        wire.encode({"a": {1, 2}})


@pytest.mark.parametrize("payload, match", [
    (b"\xc1garbage", "not a valid msgpack message"),
    (msgpack.packb({"a": 1}) + b"\x01", "not a valid msgpack message"),   # trailing bytes
    (msgpack.packb({"a": [1, 2, 3]})[:-1], "not a valid msgpack message"),  # truncated
    (msgpack.packb({"a": _ext("|O", [1], b"\0" * 8)}), "cannot travel"),
    (msgpack.packb({"a": _ext("<U1", [1], b"\0" * 4)}), "cannot travel"),
    (msgpack.packb({"a": _ext(">f4", [1], b"\0" * 4)}), "little-endian"),
    (msgpack.packb({"a": _ext("<f4", [3], b"\0" * 8)}), "needs 12 bytes, got 8"),
    (msgpack.packb({"a": _ext("<f4", [-1], b"")}), "shape"),
    (msgpack.packb({"a": _ext("<zz", [1], b"\0")}), "unknown array dtype"),
    (msgpack.packb({"a": msgpack.ExtType(7, b"")}), "unknown msgpack ext type 7"),
    (msgpack.packb({"a": msgpack.ExtType(1, b"\x93\xa3<f4")}), "malformed array payload"),
    (msgpack.packb({"a": msgpack.ExtType(1, msgpack.packb(["<f4", [1]]))}), "malformed array payload"),
])
def test_decode_refuses_malformed_payloads(payload, match):
    with pytest.raises(wire.WireError, match=match):
        wire.decode(payload)


def test_decode_never_unpickles():
    with pytest.raises(wire.WireError, match="not a valid msgpack message"):
        wire.decode(pickle.dumps({"a": np.zeros(3)}))
    with pytest.raises(wire.WireError, match="expected a binary message, got str"):
        wire.decode("text")


def test_robot_side_modules_import_without_torch_or_jax():
    import subprocess
    import sys

    code = ("import sys, vitra_jax.deploy.client, vitra_jax.deploy.wire, vitra_jax.deploy.serve\n"
            "print(sorted(m for m in ('torch', 'jax', 'flax', 'tensorflow', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
