"""Output folders that appear whole or not at all: written under a hidden temporary sibling, renamed into place.

The temporary folder goes when the block ends, also on SIGTERM (turned into `SystemExit(143)` while the block
runs in the main thread, so clean-up code runs). A process killed outright (SIGKILL, out of memory) leaves its
folder behind; the next write of the same output removes such leftovers first. The folder gets the
permissions a plain `mkdir` would give (`tempfile.mkdtemp` makes it private), so a bundle copied or served
by another user stays readable.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pathlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _sigterm_exits() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def staging_dir(out: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A fresh empty `.NAME.tmp-*` folder beside `out`, removed when the block ends (renaming it onto `out`
    inside the block is the caller's job)."""
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.tmp-"
    for stale in out.parent.glob(glob.escape(prefix) + "*"):  # left by a killed process
        shutil.rmtree(stale, ignore_errors=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        with _sigterm_exits():
            yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields a staging folder for `out_dir` (which must be absent or empty), renamed onto it only if the block
    succeeds."""
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output directory {out} exists and is not empty")
    with staging_dir(out) as tmp:
        yield tmp
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
