"""Gemma SentencePiece tokenizer with PaliGemma prompt formatting.

A prompt is encoded as [BOS] + ids(text + "\n"), the newline ending the PaliGemma prefix and encoded
together with the text, as the release's HF `PaliGemmaProcessor` does (so a last piece that merges with the
newline is kept). Image tokens are not part of the ids: the model puts the image embeddings in front of the
text itself. Prompts longer than the text budget are cut at the end and counted, never an error.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import numpy as np
import sentencepiece as spm

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


class Tokenizer:
    """Wraps a SentencePiece `tokenizer.model` file."""

    def __init__(self, path: str | os.PathLike):
        if not pathlib.Path(path).is_file():
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        self._sp = spm.SentencePieceProcessor(model_file=str(path))
        self.num_truncated = 0  # prompts cut to max_len by batch_encode

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._sp.bos_id()

    def encode_prompt(self, text: str) -> list[int]:
        """[BOS] + ids of text + "\\n" (one string, as the HF PaliGemma processor encodes it)."""
        return [self._sp.bos_id(), *self._sp.encode(text + "\n")]

    def batch_encode(self, texts: list[str], max_len: int, truncate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Right-padded (tokens int32 (B, L), mask bool (B, L)).

        A prompt longer than `max_len` is cut to its first `max_len` ids and counted in `num_truncated`
        (with `truncate=False` it raises instead)."""
        tokens = np.full((len(texts), max_len), PAD_ID, np.int32)
        mask = np.zeros((len(texts), max_len), bool)
        for i, text in enumerate(texts):
            ids = self.encode_prompt(text)
            if len(ids) > max_len:
                if not truncate:
                    raise ValueError(f"prompt {i} has {len(ids)} tokens, more than max_len={max_len}: {text[:60]!r}")
                self.num_truncated += 1
                ids = ids[:max_len]
            tokens[i, : len(ids)] = ids
            mask[i, : len(ids)] = True
        return tokens, mask

    def decode(self, ids) -> str:
        """Text of `ids`, skipping pad/bos/eos."""
        return self._sp.decode([int(i) for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID)])


def train_sentencepiece(texts: list[str], out_dir: str | os.PathLike, vocab_size: int) -> pathlib.Path:
    """Trains a small Gemma-like model (pad 0, eos 1, bos 2, unk 3, byte fallback); returns tokenizer.model."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        corpus = pathlib.Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(texts))
        prefix = pathlib.Path(tmp) / "tokenizer"
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
            byte_fallback=True, pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
            character_coverage=1.0, split_digits=True, remove_extra_whitespaces=False,
            user_defined_symbols=["\n"], add_dummy_prefix=False, hard_vocab_limit=False, minloglevel=2)
        final = out / "tokenizer.model"
        os.replace(prefix.with_suffix(".model"), final)
    return final
