"""Instruction format, its inverse, flips and per-frame captions."""

import pytest

from vitra_jax.handspace import instruction as ins


def test_format_and_parse():
    s = ins.format_instruction(None, "  Pick up the spray bottle")
    assert s == "Left hand: None. Right hand: Pick up the spray bottle."
    assert ins.parse_instruction(s) == (None, "Pick up the spray bottle.")
    with pytest.raises(ValueError, match="not a two-hand instruction"):
        ins.parse_instruction("pick it up")


def test_flip_swaps_slots_and_words_but_not_inside_words():
    s = ins.format_instruction("Hold the upright leftover jar with the left hand.", "Turn right.")
    assert ins.flip_instruction(s) == (
        "Left hand: Turn left. Right hand: Hold the upright leftover jar with the right hand."
    )
    assert ins.flip_instruction(ins.flip_instruction(s)) == s


def test_captions_at_frame():
    text = {
        "right": [("Pick up the spray bottle.", (0, 25))],
        "left": [("Wave.", (5, 10)), ("Rest.", (10, 12))],
    }
    assert ins.captions_at_frame(text, "right", 0) == {"left": None, "right": "Pick up the spray bottle."}
    assert ins.captions_at_frame(text, "right", 10) == {"left": "Rest.", "right": "Pick up the spray bottle."}
    assert ins.captions_at_frame(text, "left", 20) == {"left": "Wave.", "right": "Pick up the spray bottle."}
    assert ins.captions_at_frame({"right": [("Go.", (3, 5))]}, "left", 5) == {"left": None, "right": None}


def test_rephrasings_follow_the_caption_in_force():
    from vitra_jax.handspace.instruction import captions_at_frame, rephrasings_at_frame

    text = {"right": [("Open the jar.", (0, 10))], "left": [("Hold the jar.", (0, 4)), ("Wave.", (6, 10))]}
    alts = {"right": [(["Unscrew the jar", "Open the lid"], (0, 10))],
            "left": [(["Grip the jar"], (0, 4)), (["Wave hello"], (6, 10))]}
    assert captions_at_frame(text, "right", 7) == {"left": "Wave.", "right": "Open the jar."}
    assert rephrasings_at_frame(alts, "right", 7) == {"left": ["Wave hello"], "right": ["Unscrew the jar", "Open the lid"]}
    assert rephrasings_at_frame(alts, "right", 5) == {"left": [], "right": ["Unscrew the jar", "Open the lid"]}
    assert rephrasings_at_frame({}, "left", 0) == {"left": [], "right": []}


def test_caption_spans_follow_the_caption_in_force():
    text = {"right": [("Open the jar.", (0, 10)), ("Close it.", (10, 20))],
            "left": [("Hold the jar.", (0, 4)), ("Hold the jar.", (4, 8))]}
    assert ins.caption_spans_at_frame(text, "right", 5) == {"left": (4, 8), "right": (0, 10)}
    assert ins.caption_spans_at_frame(text, "right", 12) == {"left": None, "right": (0, 10)}
    assert ins.caption_spans_at_frame(text, "left", 12) == {"left": (0, 4), "right": (10, 20)}


def test_choose_text_draws_every_wording_and_cleans_it():
    import numpy as np

    assert ins.choose_text("  open the jar ", ["Unscrew the jar."], None) == "open the jar."
    assert ins.choose_text(None, ["x"], np.random.default_rng(0)) == "None."
    assert ins.choose_text("", [], None) == "None."
    rng = np.random.default_rng(0)
    draws = [ins.choose_text("open the jar", ["Unscrew the jar.", " Twist the lid ", ""], rng) for _ in range(300)]
    # The blank wording is never drawn; the three others about equally often.
    assert sorted(set(draws)) == ["Twist the lid.", "Unscrew the jar.", "open the jar."]
    assert min(draws.count(d) for d in set(draws)) > 70
