"""atomic_dirs: an output folder appears whole or not at all, with plain-mkdir permissions; SIGTERM and a
killed process's leftovers leave nothing behind."""

import os
import subprocess
import sys

import pytest

from vitra_jax.atomic_dirs import atomic_output_dir

CHILD = """
import os, signal, sys, time
from vitra_jax.atomic_dirs import atomic_output_dir
with atomic_output_dir(sys.argv[1]) as tmp:
    (tmp / "half").write_text("x")
    print(tmp, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
"""


def test_output_appears_whole_with_mkdir_permissions(tmp_path):
    out = tmp_path / "bundle"
    (tmp_path / ".bundle.tmp-left_by_kill_9").mkdir()  # a killed writer's leftover
    with atomic_output_dir(out) as tmp:
        (tmp / "a.json").write_text("{}")
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"] and (out / "a.json").is_file()
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    with pytest.raises(FileExistsError, match="exists and is not empty"), atomic_output_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_output_dir(tmp_path / "other"):
        raise RuntimeError("a failed write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_sigterm_removes_the_staging_folder(tmp_path):
    got = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 143 and got.stdout.strip().startswith(str(tmp_path / ".out.tmp-"))
    assert list(tmp_path.iterdir()) == []
