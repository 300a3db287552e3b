"""The run store: stage results saved atomically under a key, read back as the same records.

A result `key` (e.g. `work/{video_id}/clip0000/hands`) becomes up to three files in the run folder:
`{key}.arrays.npz` (every numpy array of the record), `{key}.record.json` (everything else, with the
dataclass names) and `{key}.done`, written last: a result counts only once its `done` marker exists, so a
process killed mid-write leaves nothing that a rerun would take for finished (it just writes the result
again). Each file is written to a temporary name and renamed. A stage that failed leaves
`{key}.failed.json` with a reason code and a message instead.

The file stems differ on purpose (`.arrays` / `.record`): no `{stem}.npz` + `{stem}.json` pair exists, so a
dataset builder scanning the run folder for episode files never mistakes a stage result for an episode.
Records are the dataclasses of `preprocess.records` and `vitra_jax.handspace.trajectory.HandTrack`, nested
in dicts, lists and tuples; loading admits only those classes (no pickle). Paths may be local or any
`etils.epath` URI.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import uuid

import numpy as np
from etils import epath

from preprocess import records
from vitra_jax.handspace import trajectory

_RECORD_TYPES = {cls.__name__: cls for cls in (
    records.VideoInfo, records.Clip, records.Intrinsics, records.CameraMotion, records.CamHand,
    records.CamHands, records.CameraPoses, records.Segment, records.Dropped, records.Caption,
    trajectory.HandTrack)}


class StoreError(ValueError):
    """A stored result that cannot be read back (malformed or written by something else)."""


def _encode(obj, arrays: dict[str, np.ndarray]):
    """A JSON-able tree of obj; arrays go into `arrays` under generated names."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if _RECORD_TYPES.get(name) is not type(obj):
            raise TypeError(f"cannot store {type(obj).__qualname__}: not a known record type")
        return {"__record__": name,
                "fields": {f.name: _encode(getattr(obj, f.name), arrays) for f in dataclasses.fields(obj)}}
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("cannot store an object array (only plain numeric/bool/str arrays)")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"cannot store a dict with non-string keys: {list(obj)[:3]}")
        return {"__dict__": {k: _encode(v, arrays) for k, v in obj.items()}}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a value of type {type(obj).__name__}")


def _decode(tree, arrays):
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__array__" in tree:
        return arrays[tree["__array__"]]
    if "__tuple__" in tree:
        return tuple(_decode(v, arrays) for v in tree["__tuple__"])
    if "__dict__" in tree:
        return {k: _decode(v, arrays) for k, v in tree["__dict__"].items()}
    if "__record__" in tree:
        cls = _RECORD_TYPES.get(tree["__record__"])
        if cls is None:
            raise StoreError(f"unknown record type {tree['__record__']!r}")
        return cls(**{k: _decode(v, arrays) for k, v in tree["fields"].items()})
    raise StoreError(f"malformed stored value with keys {sorted(tree)[:4]}")


def dumps(obj) -> tuple[bytes, bytes]:
    """(npz bytes, json bytes) of a record; equal records give equal bytes."""
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(obj, arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue(), json.dumps(tree, indent=1, sort_keys=True).encode()


def loads(npz: bytes, text: bytes):
    with np.load(io.BytesIO(npz), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return _decode(json.loads(text), arrays)


def atomic_write(path: epath.Path, data: bytes) -> None:
    """Write `data` to a temporary sibling, then rename it over `path`."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Store:
    """Stage results of one run folder (local path or epath URI)."""

    def __init__(self, root: str | os.PathLike):
        self.root = epath.Path(root)

    def _file(self, key: str, suffix: str) -> epath.Path:
        return self.root / f"{key}.{suffix}"

    def done(self, key: str) -> bool:
        return self._file(key, "done").exists()

    def save(self, key: str, record) -> None:
        """Store `record` under `key` (replacing a failure record of the same key)."""
        npz, text = dumps(record)
        self._file(key, "done").parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._file(key, "arrays.npz"), npz)
        atomic_write(self._file(key, "record.json"), text)
        atomic_write(self._file(key, "done"), b"ok\n")
        failed = self._file(key, "failed.json")
        if failed.exists():
            failed.unlink()

    def load(self, key: str):
        if not self.done(key):
            raise StoreError(f"no finished result {key!r} in {self.root}")
        try:
            return loads(self._file(key, "arrays.npz").read_bytes(), self._file(key, "record.json").read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"result {key!r} in {self.root} is unreadable: {type(e).__name__}: {e}") from None

    def fail(self, key: str, reason: str, detail: str) -> None:
        """Record that the stage of `key` failed, with a short reason code and a message."""
        path = self._file(key, "failed.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({"reason": reason, "detail": detail}, indent=1).encode())

    def failure(self, key: str) -> dict | None:
        """{'reason', 'detail'} of a failed stage, or None."""
        path = self._file(key, "failed.json")
        return json.loads(path.read_text()) if path.exists() else None
