"""Train (byte-level BPE or character-level) or load a tokenizer; always a PreTrainedTokenizerFast."""

from __future__ import annotations

import os
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lmstack.config import TokenizerConfig

EOS = "<|endoftext|>"
UNK = "<|unk|>"


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)
    if tok.token_to_id(UNK) is not None:
        fast.unk_token = UNK
    return fast


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


def char_tokenizer(alphabet: Iterable[str]) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet` (sorted, so the ids are stable), plus EOS and UNK."""
    chars = sorted(set(alphabet))
    vocab = {ch: i for i, ch in enumerate(chars)}
    vocab[EOS] = len(vocab)
    vocab[UNK] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _wrap(tok)


def load_tokenizer(path: str) -> PreTrainedTokenizerFast:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory {path!r} does not exist")
    tok = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    if tok.eos_token is None:
        raise ValueError(f"tokenizer {path!r} has no eos_token; lmstack separates documents with it")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tokenizer(cfg: TokenizerConfig, texts: Iterable[str], alphabet: Iterable[str] | None = None):
    """The recipe's tokenizer: loaded (pretrained), or trained on `texts` / `alphabet`."""
    if cfg.kind == "pretrained":
        assert cfg.path is not None
        return load_tokenizer(cfg.path)
    if cfg.kind == "char":
        return char_tokenizer(alphabet if alphabet is not None else "".join(texts))
    return train_bpe(texts, cfg.vocab_size)
