"""Expected failures: of one unit of work (bad input, a backend error; each with a short reason code), or of
the run's settings (`ConfigError`).

`graph` records a `StageError` as the failure of its unit, counted by `reason` in summary.json, and the run
goes on; any other exception is a bug and stops the run. No imports, so every stage (the torch-based hand
backends too) can raise these and a process that runs no hand model still catches them all.
"""

from __future__ import annotations


class StageError(ValueError):
    """A unit of work that failed on bad input or a backend error; `reason` is a short code for failure counts."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class ConfigError(ValueError):
    """Settings or a command line that cannot work (a missing key, path or file, a changed run folder): found
    before or between units of work, it stops the run with its message alone."""


class HandsFileError(StageError):
    """A hand result file (VITRA annotation, stored result, WiLoR detections, HaWoR output) that is missing,
    malformed or does not cover the clip."""

    def __init__(self, detail: str):
        super().__init__("bad_hands_file", detail)
