"""On-disk cache of model answers keyed by a hash of everything that decides the answer.

One small JSON file per key under `root/<first two hex digits>/<key>.json`, written to a temporary name
and renamed, so a crash never leaves a half-written entry and concurrent writers of one key are harmless.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path


def cache_key(*parts: str | bytes) -> str:
    """sha256 over the parts, each length-prefixed so different splits never collide."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


class ResponseCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create the caption cache folder {self.root}: {e}") from None

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored entry, or None when absent (an unreadable entry counts as absent)."""
        try:
            entry = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
        try:
            tmp.write_text(json.dumps(entry, sort_keys=True))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
