"""Wire format of the policy server: msgpack of nested dicts/lists of scalars, strings and numpy arrays.

An array travels as msgpack ext type 1 whose payload is itself msgpack `[dtype, shape, raw bytes]`, with the
dtype a little-endian numpy type string (`'<f4'`, `'|u1'`, `'|b1'`). Only bool, integer, unsigned, float and
complex dtypes exist on the wire: object, string, void and datetime arrays are refused on both ends, and no
pickle is ever involved. Numpy scalars travel as 0-d arrays. Numpy and msgpack only (the robot-side client
imports this).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

ARRAY_EXT = 1
_KINDS = "biufc"  # bool, signed, unsigned, float, complex


class WireError(ValueError):
    """A payload that is not a valid message of this format (names what is wrong)."""


def _check_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind not in _KINDS:
        raise WireError(f"arrays of dtype {dtype} ({dtype.kind!r}) cannot travel; only bool, integer, float "
                        "and complex arrays are allowed")
    return dtype


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        dtype = _check_dtype(arr.dtype).newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        data = np.ascontiguousarray(arr, dtype=dtype).tobytes()
        return msgpack.ExtType(ARRAY_EXT, msgpack.packb([dtype.str, list(arr.shape), data]))
    raise TypeError(f"cannot encode object of type {type(obj).__name__} (only dicts, lists, tuples, str, bytes, "
                    "int, float, bool, None and numpy arrays)")


def encode(obj: Any) -> bytes:
    """msgpack bytes of `obj` (dicts, lists, tuples, scalars, strings, bytes, numpy arrays)."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def _ext_hook(code: int, payload: bytes) -> np.ndarray:
    if code != ARRAY_EXT:
        raise WireError(f"unknown msgpack ext type {code} (only {ARRAY_EXT} = numpy array)")
    try:
        fields = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as e:
        raise WireError(f"malformed array payload: {e}") from None
    if not (isinstance(fields, list) and len(fields) == 3 and isinstance(fields[0], str)
            and isinstance(fields[1], list) and isinstance(fields[2], bytes)):
        raise WireError("malformed array payload: expected [dtype string, shape list, raw bytes]")
    dtype_str, shape, data = fields
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise WireError(f"malformed array shape {shape!r}: expected non-negative integers")
    if dtype_str[:1] not in "<|":
        raise WireError(f"array dtype {dtype_str!r} must be little-endian ('<...') or byte-sized ('|...')")
    try:
        dtype = np.dtype(dtype_str)
    except TypeError:
        raise WireError(f"unknown array dtype {dtype_str!r}") from None
    _check_dtype(dtype)
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise WireError(f"array of dtype {dtype_str} and shape {tuple(shape)} needs {expected} bytes, "
                        f"got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def decode(data: bytes) -> Any:
    """Inverse of `encode`; raises `WireError` on bytes that are not one valid message."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary message, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=True)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise WireError(f"not a valid msgpack message: {type(e).__name__}: {e}") from None
