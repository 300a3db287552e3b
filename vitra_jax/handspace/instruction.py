"""Instruction text: "Left hand: <text> Right hand: <text>", its inverse, flips and per-frame captions.

An idle hand reads "None."; each text is stripped and ends with '.' (VITRA §3.3). A horizontal flip swaps
the hand words inside the texts (whole words only, so "upright" and "leftover" survive) and the two slots.
"""

from __future__ import annotations

import re

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
    flip = lambda s: None if s is None else swap_hand_words(s)  # noqa: E731
    return format_instruction(flip(right), flip(left))


def _entries_at_frame(entries: dict[str, list], main_hand: str, t: int) -> dict[str, object]:
    """Per hand, the payload of the entry in force at frame t: the main hand's first entry; for the other
    hand the entry whose half-open (start, end) interval covers t; None if there is none."""
    out: dict[str, object] = {}
    for hand in ("left", "right"):
        items = entries.get(hand) or []
        if hand == main_hand:
            out[hand] = items[0][0] if items else None
        else:
            out[hand] = next((x for x, (s, e) in items if s <= t < e), None)
    return out


def captions_at_frame(text: dict[str, Captions], main_hand: str, t: int) -> dict[str, str | None]:
    """Per-hand caption for frame t: the main hand's first caption; the other hand's caption covering t.

    Intervals are half-open (start, end) in episode frames (official `get_item_frame`).
    """
    return _entries_at_frame(text, main_hand, t)  # type: ignore[return-value]


def rephrasings_at_frame(rephrasings: dict[str, list], main_hand: str, t: int) -> dict[str, list[str]]:
    """Per-hand alternative wordings of the caption `captions_at_frame` picks (empty list if none)."""
    return {h: list(v or []) for h, v in _entries_at_frame(rephrasings, main_hand, t).items()}
