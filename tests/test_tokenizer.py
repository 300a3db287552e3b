"""SentencePiece training, PaliGemma prompt format, padding and errors."""

import numpy as np
import pytest

from vitra_jax.tokenizer import BOS_ID, PAD_ID, Tokenizer, train_sentencepiece

TEXTS = ["pick up the red cup with the left hand", "move the right hand to the bowl",
         "open the drawer slowly", "rotate the bottle 90 degrees"] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer(train_sentencepiece(TEXTS, tmp_path_factory.mktemp("tok"), vocab_size=300))


def test_special_ids_and_round_trip(tok):
    assert tok.vocab_size == 300
    ids = tok.encode_prompt("pick up the cup")
    assert ids[0] == BOS_ID and tok.decode(ids) == "pick up the cup\n"
    newline = tok.encode_prompt("")
    assert newline[0] == BOS_ID and tok.decode(newline) == "\n"
    assert tok.decode(tok.encode_prompt("émoji ☃")) == "émoji ☃\n"  # byte fallback, no unk


def test_batch_encode_right_pads(tok):
    tokens, mask = tok.batch_encode(["open the drawer", "open"], max_len=32)
    assert tokens.dtype == np.int32 and mask.dtype == bool and tokens.shape == (2, 32)
    n0, n1 = mask.sum(1)
    assert n0 > n1 and mask[0, :n0].all() and not mask[0, n0:].any()
    assert (tokens[1, n1:] == PAD_ID).all()
    assert tokens[1, :n1].tolist() == tok.encode_prompt("open")


def test_too_long_prompt(tok):
    short = len(tok.encode_prompt("open"))
    with pytest.raises(ValueError, match="prompt 1"):
        tok.batch_encode(["open", "pick up the red cup with the left hand"], max_len=short)
    tokens, mask = tok.batch_encode(["pick up the red cup with the left hand"], max_len=4, truncate=True)
    assert mask.all() and tokens[0, 0] == BOS_ID
