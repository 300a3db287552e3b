"""SentencePiece training, the PaliGemma prompt ids against transformers' `PaliGemmaProcessor` (what the
release feeds its model), padding, truncation counting and errors."""

import numpy as np
import pytest
import sentencepiece as spm

from vitra_jax.tokenizer import BOS_ID, PAD_ID, Tokenizer, train_sentencepiece

TEXTS = ["pick up the red cup with the left hand", "move the right hand to the bowl.",
         "open the drawer slowly", "rotate the bottle 90 degrees"] * 20
PROMPTS = ["Left hand: None. Right hand: Pick up the red cup.", "pick up the red cup", "move the bowl",
           "Left hand: Hold the cup. Right hand: None.", "", "two  spaces  ", "émoji ☃", "line\nbreak."]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return train_sentencepiece(TEXTS, tmp_path_factory.mktemp("tok"), vocab_size=300)


@pytest.fixture(scope="module")
def tok(model_file):
    return Tokenizer(model_file)


@pytest.fixture(scope="module")
def merging_model(tmp_path_factory):
    """Like train_sentencepiece's model, plus pieces in which a last word or '.' merges with the newline (as
    pieces such as ".\\n" do in Gemma's vocabulary)."""
    out = tmp_path_factory.mktemp("tok_merge")
    (out / "corpus.txt").write_text("\n".join(TEXTS))
    symbols = ["\n", ".\n", "cup\n"]
    spm.SentencePieceTrainer.train(
        input=str(out / "corpus.txt"), model_prefix=str(out / "tokenizer"), vocab_size=300, model_type="bpe",
        byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, character_coverage=1.0, split_digits=True,
        remove_extra_whitespaces=False, user_defined_symbols=symbols, add_dummy_prefix=False,
        hard_vocab_limit=False, minloglevel=2)
    return out / "tokenizer.model", symbols


def _hf_processor(model_file, user_defined):
    """transformers' PaliGemmaProcessor over a Gemma tokenizer converted from `model_file` as HF's Gemma
    converter does (vocab, merges ordered by piece score, user-defined pieces as added tokens), reading the
    model with SentencePieceProcessor so the incompatible sentencepiece protobuf module is never imported."""
    from tokenizers import AddedToken
    from transformers import GemmaTokenizer, PaliGemmaProcessor, SiglipImageProcessorPil
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = generate_merges(vocab, {p: sp.get_score(i) for i, p in enumerate(pieces)})
    hf = GemmaTokenizer(vocab=vocab, merges=merges, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                        unk_token="<unk>")
    hf.add_tokens([AddedToken(s, normalized=False, special=False) for s in user_defined])
    images = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    images.image_seq_length = 4
    return PaliGemmaProcessor(image_processor=images, tokenizer=hf)


def _processor_text_ids(processor, prompt):
    """Ids the release's call `processor(images=..., text="<image>" + prompt)` gives, image tokens dropped."""
    ids = list(processor(images=np.zeros((28, 28, 3), np.uint8), text="<image>" + prompt)["input_ids"][0])
    assert ids[:4] == [processor.image_token_id] * 4
    return ids[4:]


def test_prompt_ids_match_the_hf_paligemma_processor(tok, model_file, merging_model):
    path, symbols = merging_model
    plain = _hf_processor(model_file, ["\n"])  # train_sentencepiece makes "\n" a user-defined piece
    for prompt in PROMPTS:
        assert tok.encode_prompt(prompt) == _processor_text_ids(plain, prompt), prompt
    merging, ours, sp = _hf_processor(path, symbols), Tokenizer(path), spm.SentencePieceProcessor(model_file=str(path))
    separate = 0
    for prompt in PROMPTS:
        want = _processor_text_ids(merging, prompt)
        assert ours.encode_prompt(prompt) == want, prompt
        separate += want != [BOS_ID, *sp.encode(prompt), *sp.encode("\n")]
    # The three prompts ending in "." and the one ending in "cup" end in a piece merged with the newline:
    # encoding text and "\n" apart would give other ids there.
    assert separate == 4


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


def test_too_long_prompts_are_cut_and_counted(tmp_path):
    tok = Tokenizer(train_sentencepiece(TEXTS, tmp_path, vocab_size=300))
    long = "pick up the red cup with the left hand"
    full = tok.encode_prompt(long)
    tokens, mask = tok.batch_encode(["open", long, long], max_len=6)
    assert tok.num_truncated == 2
    assert tokens[1].tolist() == full[:6] and mask[1:].all()
    assert tokens[0].tolist()[: mask[0].sum()] == tok.encode_prompt("open")
    tok.batch_encode(["open"], max_len=6)
    assert tok.num_truncated == 2
    with pytest.raises(ValueError, match="prompt 1 has"):
        tok.batch_encode(["open", long], max_len=6, truncate=False)
