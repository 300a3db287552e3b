"""Train/val assignment by source video: stable (an episode keeps its split as the dataset grows) and
leak-free (all episodes of one video fall in the same split)."""

from __future__ import annotations

import hashlib


def group_key(source: str, video_name: str) -> str:
    """The split key of an episode: its sub-dataset and source video."""
    return f"{source}/{video_name}"


def unit_hash(group: str) -> float:
    """A uniform number in [0, 1) determined by `group` alone."""
    return int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2.0**64


def split_of(group: str, val_fraction: float) -> str:
    return "val" if unit_hash(group) < val_fraction else "train"


def assign(groups: list[str], val_fraction: float) -> dict[str, list[int]]:
    """Split name -> positions in `groups`; splits without any position are left out."""
    out: dict[str, list[int]] = {"train": [], "val": []}
    for i, g in enumerate(groups):
        out[split_of(g, val_fraction)].append(i)
    return {name: rows for name, rows in out.items() if rows}
