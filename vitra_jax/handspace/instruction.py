"""Instruction text: "Left hand: <text> Right hand: <text>", its inverse, flips and per-frame captions.

An idle hand reads "None."; each text is stripped and ends with '.' (VITRA §3.3). A horizontal flip swaps
the hand words inside the texts (whole words only, so "upright" and "leftover" survive) and the two slots.
At frame t the main hand's caption is its first one and the other hand's the one whose interval covers t
(official `get_item_frame`); a training sample draws each text among that caption and its rephrasings.
Deliberate difference: the release looks the secondary hand's rephrasings up by position among captions
with the same text (an index quirk); here they are always those of the covering caption.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

NONE_TEXT = "None."
_PATTERN = re.compile(r"^Left hand: (?P<left>.*) Right hand: (?P<right>.*)$", re.DOTALL)
_HAND_WORD = re.compile(r"\b(left|right|Left|Right|LEFT|RIGHT)\b")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}

Captions = list[tuple[str, tuple[int, int]]]


def clean_text(text: str | None) -> str:
    """Stripped text ending with '.', or "None." for a missing/empty text."""
    text = (text or "").strip()
    if not text:
        return NONE_TEXT
    return text if text.endswith(".") else text + "."


def format_instruction(left: str | None, right: str | None) -> str:
    """The two-hand instruction string."""
    return f"Left hand: {clean_text(left)} Right hand: {clean_text(right)}"


def parse_instruction(instruction: str) -> tuple[str | None, str | None]:
    """Inverse of `format_instruction`: (left, right) texts, None for an idle hand."""
    m = _PATTERN.match(instruction)
    if m is None:
        raise ValueError(f"not a two-hand instruction: {instruction!r}")
    return tuple(None if m[h] == NONE_TEXT else m[h] for h in ("left", "right"))  # type: ignore[return-value]


def swap_hand_words(text: str) -> str:
    """Swap left/right words, keeping case; other words containing them are untouched."""
    return _HAND_WORD.sub(lambda m: _SWAP[m.group(1)], text)


def flip_instruction(instruction: str) -> str:
    """The instruction of the horizontally flipped video."""
    left, right = parse_instruction(instruction)
    flip = lambda s: None if s is None else swap_hand_words(s)
    return format_instruction(flip(right), flip(left))


def _entry_at_frame(entries: dict[str, list], main_hand: str, hand: str, t: int) -> tuple | None:
    """The (payload, (start, end)) entry of `hand` in force at frame t: the main hand's first entry; for the
    other hand the entry whose half-open interval covers t; None if there is none."""
    items = entries.get(hand) or []
    if hand == main_hand:
        return items[0] if items else None
    return next((item for item in items if item[1][0] <= t < item[1][1]), None)


def captions_at_frame(text: dict[str, Captions], main_hand: str, t: int) -> dict[str, str | None]:
    """Per-hand caption for frame t: the main hand's first caption; the other hand's caption covering t.

    Intervals are half-open (start, end) in episode frames (official `get_item_frame`).
    """
    out = {}
    for hand in ("left", "right"):
        entry = _entry_at_frame(text, main_hand, hand, t)
        out[hand] = None if entry is None else entry[0]
    return out


def caption_spans_at_frame(text: dict[str, Captions], main_hand: str, t: int) -> dict[str, tuple[int, int] | None]:
    """Per-hand half-open (start, end) interval of the caption `captions_at_frame` picks (None if none)."""
    out = {}
    for hand in ("left", "right"):
        entry = _entry_at_frame(text, main_hand, hand, t)
        out[hand] = None if entry is None else (int(entry[1][0]), int(entry[1][1]))
    return out


def rephrasings_at_frame(rephrasings: dict[str, list], main_hand: str, t: int) -> dict[str, list[str]]:
    """Per-hand alternative wordings of the caption `captions_at_frame` picks (empty list if none)."""
    out = {}
    for hand in ("left", "right"):
        entry = _entry_at_frame(rephrasings, main_hand, hand, t)
        out[hand] = [] if entry is None else list(entry[0] or [])
    return out


def choose_text(caption: str | None, rephrasings: Sequence[str] = (), rng: np.random.Generator | None = None) -> str:
    """One hand's text for a sample: drawn uniformly among the caption and its rephrasings with `rng` (the
    caption itself when `rng` is None), then stripped and ended with '.'; "None." for a missing caption."""
    if not (caption or "").strip():
        return NONE_TEXT
    options = [caption, *(r for r in rephrasings if r.strip())]  # a blank wording would read "None."
    return clean_text(options[int(rng.integers(len(options)))] if rng is not None else caption)
