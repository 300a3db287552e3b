"""Where the MANO model file is, without torch: the labeling run checks it before any work starts."""

from __future__ import annotations

from pathlib import Path

from preprocess.errors import ConfigError

MANO_URL = "https://mano.is.tue.mpg.de"


class MissingManoError(ConfigError):
    """The MANO model file is not where the configuration says."""


def mano_file(mano_dir: str | Path) -> Path:
    """`MANO_RIGHT.pkl` in `mano_dir` (or `mano_dir/mano/`, smplx's layout), or `mano_dir` itself if a file."""
    how = (f"The MANO license does not allow shipping it: register at {MANO_URL} , download 'Models & Code' "
           "(mano_v1_2) and set the hands config's mano_dir to the folder holding models/MANO_RIGHT.pkl.")
    if not str(mano_dir):
        raise MissingManoError(f"MANO model file MANO_RIGHT.pkl needed, but no mano_dir is configured. {how}")
    base = Path(mano_dir).expanduser()
    candidates = [base] if base.suffix == ".pkl" else [base / "MANO_RIGHT.pkl", base / "mano" / "MANO_RIGHT.pkl"]
    for c in candidates:
        if c.is_file():
            return c
    raise MissingManoError(f"MANO model file not found: {candidates[0]} . {how}")
