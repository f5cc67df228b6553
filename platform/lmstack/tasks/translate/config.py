"""The translate recipe section: directions, architecture, lengths, splits, decoding and augmentation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmstack.config import Section


class TranslateDecodeConfig(Section):
    num_beams: int = Field(4, ge=1)  # 1 = greedy
    length_penalty: float = 1.0  # beam score = sum log p / length ** length_penalty
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(64, ge=1)


class TranslateAugmentConfig(Section):
    """Back-translation of a monolingual file (reverse model makes the sources) and source-side noise."""

    monolingual: str | None = None  # one target-language sentence per line
    monolingual_lang: Literal["en", "zh"] = "en"
    reverse_model: str | None = None  # exported model that translates monolingual_lang -> the other
    max_sentences: int | None = Field(None, ge=1)
    noise_copies: int = Field(0, ge=0)  # noisy copies of each training source
    p_delete: float = Field(0.1, ge=0, lt=1)
    p_swap: float = Field(0.1, ge=0, lt=1)
    p_mask: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _reverse_for_monolingual(self) -> TranslateAugmentConfig:
        if self.monolingual and not self.reverse_model:
            raise ValueError("reverse_model is required when monolingual is given")
        return self


class TranslateConfig(Section):
    """task: translate. Pairs in cmn.txt format (English<TAB>Chinese<TAB>attribution) from data.paths."""

    directions: list[Literal["zh-en", "en-zh"]] = Field(["zh-en"], min_length=1)
    # encoder-decoder: a Marian-shaped seq2seq. decoder: a causal LM (the model section's family, or the
    # pretrained lmstack LM at model.path, which must use this recipe's tokenizer) on "[tag] src <eos> tgt
    # <eos>" rows with the loss on the target only: the transfer route.
    arch: Literal["encoder-decoder", "decoder"] = "encoder-decoder"
    zh_tokens: Literal["bpe", "char"] = "bpe"  # char: each CJK character is its own token
    max_length: int = Field(64, ge=4)  # tokens per side, padded to this
    test_size: int = Field(1000, ge=1)  # held-out pairs, never trained on
    val_size: int = Field(500, ge=1)
    split_seed: int = 0
    # Train on this many training pairs only (whole leak-free groups, in seeded-hash order); the rest go
    # to train_unused.tsv, e.g. as monolingual text for a low-resource experiment. None: every pair.
    max_train_pairs: int | None = Field(None, ge=1)
    # Also write `lm_text/`: every sentence of the train split (both languages, used pairs or not), one
    # record each, to pretrain the decoder LM that arch: decoder fine-tunes; test and val never enter it.
    lm_text: bool = False
    # Training loss only (validation stays plain cross-entropy, so val_loss is comparable across runs).
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    decode: TranslateDecodeConfig = TranslateDecodeConfig()
    augment: TranslateAugmentConfig = TranslateAugmentConfig()

    @model_validator(mode="after")
    def _monolingual_is_a_target(self) -> TranslateConfig:
        # Back-translated rows translate into the monolingual language: a direction the model must train.
        targets = {d.split("-")[1] for d in self.directions}
        if self.augment.monolingual and self.augment.monolingual_lang not in targets:
            raise ValueError(f"augment.monolingual_lang {self.augment.monolingual_lang!r} is not the target of any "
                             f"of directions {self.directions}: back-translated pairs would train an untrained "
                             "direction")
        return self


