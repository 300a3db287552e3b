"""The MediaPipe venv's creation protocol: one builder at a time, a half-built venv is never used.

The pins are swapped for an already-satisfied one (pip itself) so this runs in seconds and offline; the
real pins are exercised by test_hands_mediapipe.py.
"""

import json
import subprocess
import sys
from pathlib import Path

from preprocess.hands import mediapipe_env

BUILD = """
import sys
from preprocess.hands import mediapipe_env as m
m.PINS = ("pip",)
m.CHECK = "print('ok')"
print(m.ensure_venv(sys.argv[1]))
"""
REPO = Path(mediapipe_env.__file__).resolve().parents[2]


def _builders(venv, n):
    procs = [subprocess.Popen([sys.executable, "-c", BUILD, str(venv)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for _ in range(n)]
    return [p.communicate() + (p.returncode,) for p in procs]


def test_concurrent_creation_builds_once_and_half_built_venvs_are_rebuilt(tmp_path):
    venv = tmp_path / "mp-venv"
    venv.mkdir()
    (venv / "leftover").write_text("an interrupted build")  # no marker: must not be used

    results = _builders(venv, 2)

    assert [rc for _, _, rc in results] == [0, 0], [err for _, err, _ in results]
    assert {out.strip() for out, _, _ in results} == {str(venv / "bin" / "python")}
    assert sum("creating the MediaPipe venv" in err for _, err, _ in results) == 1
    assert not (venv / "leftover").exists()
    marker = json.loads((venv / mediapipe_env.MARKER).read_text())
    assert marker["pins"] == ["pip"] and marker["mediapipe"] == "ok"

    (out, err, rc), = _builders(venv, 1)  # ready: nothing rebuilt
    assert rc == 0 and "creating" not in err


def test_venv_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VITRA_MEDIAPIPE_VENV", str(tmp_path / "elsewhere"))
    assert mediapipe_env.venv_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("VITRA_MEDIAPIPE_VENV")
    assert str(mediapipe_env.venv_dir()).endswith(".cache/vitra_jax/mediapipe-venv")
    assert mediapipe_env.creation_seconds(tmp_path / "not-built") is None
