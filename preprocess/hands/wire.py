"""Framed messages between the pipeline and a worker process (stdlib + numpy only: the worker imports it too).

A message is a JSON header plus numpy arrays, written as: u32 part count, then each part as u64 length and
bytes; part 0 is the UTF-8 JSON header, the others are `.npy` files (saved without pickle, loaded with
`allow_pickle=False`). Little-endian throughout.
"""

from __future__ import annotations

import io
import json
import struct
from typing import BinaryIO

import numpy as np


class WireError(ConnectionError):
    """The other side closed the stream or sent something malformed."""


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            raise WireError(f"stream closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def send(stream: BinaryIO, header: dict, *arrays: np.ndarray) -> None:
    parts = [json.dumps(header).encode("utf-8")]
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
        parts.append(buf.getvalue())
    stream.write(struct.pack("<I", len(parts)))
    for p in parts:
        stream.write(struct.pack("<Q", len(p)))
        stream.write(p)
    stream.flush()


def receive(stream: BinaryIO) -> tuple[dict, list[np.ndarray]]:
    (count,) = struct.unpack("<I", _read_exact(stream, 4))
    if count < 1:
        raise WireError("message without a header")
    parts = []
    for _ in range(count):
        (size,) = struct.unpack("<Q", _read_exact(stream, 8))
        parts.append(_read_exact(stream, size))
    try:
        header = json.loads(parts[0].decode("utf-8"))
        arrays = [np.load(io.BytesIO(p), allow_pickle=False) for p in parts[1:]]
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"malformed message: {e}") from None
    if not isinstance(header, dict):
        raise WireError("message header is not a JSON object")
    return header, arrays
