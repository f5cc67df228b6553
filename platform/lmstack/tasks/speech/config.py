"""The `speech` recipe section: where transcripts come from, features, speaker split, vocabulary,
augmentation, the CTC model's architecture and decoding. Pydantic only (no torch)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lmstack.config import Recipe, Section

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Lower-case letters, space and apostrophe: enough for English read speech and spoken digits.
DEFAULT_VOCAB = " abcdefghijklmnopqrstuvwxyz'"
AUDIO_SUFFIXES = (".wav", ".flac")
PATTERN_FIELD = re.compile(r"\{([a-z_]+)\}")


class FeatureConfig(Section):
    """Log-mel features (computed in prepare on Ray Data, and identically at inference)."""

    sample_rate: int = Field(16000, ge=1000)  # audio is resampled to this rate
    n_mels: int = Field(40, ge=8, le=256)
    win_ms: float = Field(25.0, gt=0)  # analysis window (the FFT size is the next power of two)
    hop_ms: float = Field(10.0, gt=0)
    f_min: float = Field(20.0, ge=0)
    f_max: float | None = Field(None, gt=0)  # default: Nyquist
    # utterance: each mel band to zero mean / unit variance per utterance (removes channel and
    # loudness differences between speakers); none: raw log-mel.
    normalize: Literal["utterance", "none"] = "utterance"


class AugmentConfig(Section):
    """Training split only; validation and test stay as recorded."""

    speeds: list[float] = Field(default_factory=list)  # extra copies resampled at these speed factors
    noise_copies: int = Field(0, ge=0)  # extra copies with white noise added ...
    noise_snr_db: tuple[float, float] = (10.0, 30.0)  # ... at a signal-to-noise ratio drawn in this range
    # SpecAugment (Park et al. 2019), applied to each training batch in the loss:
    time_masks: int = Field(0, ge=0)
    time_mask_frames: int = Field(10, ge=1)  # widest time mask, in feature frames
    freq_masks: int = Field(0, ge=0)
    freq_mask_bins: int = Field(8, ge=1)  # widest frequency mask, in mel bins

    @field_validator("speeds")
    @classmethod
    def _speeds(cls, v: list[float]) -> list[float]:
        if any(not 0.5 <= s <= 2.0 or s == 1.0 for s in v):
            raise ValueError("speed factors must lie in [0.5, 2.0] and differ from 1.0 (the original)")
        return v

    @model_validator(mode="after")
    def _snr_order(self) -> AugmentConfig:
        if self.noise_snr_db[0] > self.noise_snr_db[1]:
            raise ValueError(f"noise_snr_db {list(self.noise_snr_db)}: low must not exceed high")
        return self


class DecodeConfig(Section):
    method: Literal["greedy", "beam"] = "greedy"
    beam_width: int = Field(8, ge=1)
    # Shallow fusion: score += lm_weight * log p_LM(char | history) + word_bonus per word, with a
    # character n-gram LM of the training transcripts (exported beside the model). 0: no LM.
    lm_weight: float = Field(0.0, ge=0)
    word_bonus: float = 0.0
    lm_order: int = Field(4, ge=1, le=6)  # the export keeps counts up to order 6


class SpeechConfig(Section):
    """task: speech. Audio files with transcripts from file names (a pattern) or from manifests."""

    # Directories in data.paths are listed for .wav/.flac files whose name (without suffix) matches
    # this pattern; {digit} is one digit (its English word becomes the transcript), {text} a transcript
    # without "_", {speaker} the speaker; other {fields} match anything but "_". FSDD's names by default.
    filename_pattern: str = "{digit}_{speaker}_{take}"
    # Files in data.paths (.jsonl/.csv) are manifests: one row per utterance with these fields; a
    # relative audio path is relative to the manifest's folder.
    audio_field: str = "audio"
    text_field: str = "text"
    speaker_field: str = "speaker"  # optional in a row; without speakers the split is by utterance
    # Speaker-disjoint split: these speakers' utterances validate / test and never train. With none
    # given, whole speakers go to validation by a stable hash (data.val_fraction of the speakers).
    val_speakers: list[str] = Field(default_factory=list)
    test_speakers: list[str] = Field(default_factory=list)
    # Extra sources (directories or manifests) that only ever train, e.g. espeak-ng synthetic speakers.
    train_only_paths: list[str] = Field(default_factory=list)
    vocab: str = DEFAULT_VOCAB  # the output characters (CTC blank is added as id 0)
    lowercase: bool = True
    max_seconds: float = Field(10.0, gt=0)  # longer audio is rejected (reason too_long)
    # Audio whose peak stays below this level (dB full scale) is rejected as silence.
    silence_dbfs: float = Field(-50.0, le=0)
    features: FeatureConfig = FeatureConfig()
    augment: AugmentConfig = AugmentConfig()
    # The encoder over the features; its width, depth, heads and dropout are the model section's
    # n_embd, n_layer, n_head, dropout. lstm / gru: bidirectional recurrent baseline.
    arch: Literal["transformer", "conformer", "lstm", "gru"] = "transformer"
    subsample: Literal[1, 2, 4] = 4  # the convolutional front end's time stride
    conv_kernel: int = Field(15, ge=3)  # conformer's depthwise convolution
    ff_mult: int = Field(4, ge=1)  # feed-forward width = ff_mult * n_embd
    decode: DecodeConfig = DecodeConfig()

    @field_validator("filename_pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        fields = PATTERN_FIELD.findall(v)
        if not ({"digit", "text"} & set(fields)):
            raise ValueError(f"{v!r}: needs a {{digit}} or {{text}} field (the transcript)")
        if len(fields) != len(set(fields)):
            raise ValueError(f"{v!r}: a field appears twice")
        return v

    @field_validator("vocab")
    @classmethod
    def _vocab(cls, v: str) -> str:
        if len(set(v)) != len(v) or not v:
            raise ValueError("vocab: distinct characters, at least one")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> SpeechConfig:
        both = set(self.val_speakers) & set(self.test_speakers)
        if both:
            raise ValueError(f"speakers {sorted(both)} are in both val_speakers and test_speakers")
        return self


def check_recipe(recipe: Recipe) -> None:
    """Cross-section rules of a speech recipe (run by the recipe's validation)."""
    cfg = recipe.speech
    if cfg.arch in ("transformer", "conformer") and recipe.model.n_embd % recipe.model.n_head:
        raise ValueError(f"model.n_head ({recipe.model.n_head}) must divide model.n_embd ({recipe.model.n_embd})")
    if cfg.lowercase and cfg.vocab != cfg.vocab.lower():
        raise ValueError("speech.vocab has upper-case letters but speech.lowercase is true")
