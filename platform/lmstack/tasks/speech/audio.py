"""Audio in, log-mel features out: read (soundfile), check, resample, featurize.

The same functions run in prepare (on Ray Data), in predict/evaluate and in the Serve replica, so a
served model hears exactly what it was trained on. torchaudio is not used: its wheels pin another
torch. The mel filterbank is transformers' (Slaney scale and norm, as Whisper and librosa use).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, BinaryIO

import numpy as np

# Why an utterance cannot be used; rejects/ and error messages carry these names.
REASONS = ("unreadable", "empty", "silence", "too_long", "too_short", "oov_chars", "name_pattern", "missing_field")


class AudioReject(ValueError):
    """An utterance that cannot be used, with a reason from REASONS and a one-line detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def read_audio(source: str | bytes | BinaryIO, sample_rate: int, max_seconds: float | None = None,
               silence_dbfs: float | None = -50.0) -> np.ndarray:
    """Mono float32 samples at `sample_rate`. Raises AudioReject: unreadable, empty, too_long, silence."""
    import soundfile as sf

    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with sf.SoundFile(src) as f:
            rate, frames = f.samplerate, f.frames
            if max_seconds is not None and frames > max_seconds * rate:
                raise AudioReject("too_long", f"{frames / rate:.2f} s is over the {max_seconds:g} s limit")
            data = f.read(dtype="float32", always_2d=True)
    except AudioReject:
        raise
    except Exception as err:  # noqa: BLE001 - libsndfile raises several types for bad input
        raise AudioReject("unreadable", _first_line(err)) from None
    if data.size == 0:
        raise AudioReject("empty", "no audio samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise AudioReject("unreadable", "samples are not finite numbers")
    if silence_dbfs is not None:
        peak = float(np.abs(wave).max())
        if peak <= 10 ** (silence_dbfs / 20):
            level = f"{20 * math.log10(peak):.1f} dBFS" if peak > 0 else "digital silence"
            raise AudioReject("silence", f"peak {level} is below {silence_dbfs:g} dBFS")
    return resample(wave, rate, sample_rate)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy), exact for any pair of integer rates."""
    if rate == target:
        return np.ascontiguousarray(wave, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(wave, target // g, rate // g).astype(np.float32)


def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi/sox-style speed perturbation: `factor` times faster (tempo and pitch together)."""
    from scipy.signal import resample_poly

    up, down = 1000, int(round(1000 * factor))
    g = math.gcd(up, down)
    return resample_poly(wave, up // g, down // g).astype(np.float32)


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at `snr_db` below the utterance's mean power."""
    power = float(np.mean(wave.astype(np.float64) ** 2)) or 1e-12
    noise = rng.standard_normal(wave.shape) * math.sqrt(power / 10 ** (snr_db / 10))
    return (wave + noise).astype(np.float32)


@dataclass(frozen=True)
class Features:
    """Log-mel settings; `to_dict()` is what an exported model stores, `from_dict` what it loads."""

    sample_rate: int = 16000
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 20.0
    f_max: float | None = None
    normalize: str = "utterance"

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        return max(1, int(round(self.sample_rate * self.hop_ms / 1000)))

    @property
    def n_fft(self) -> int:
        return 1 << max(0, (self.win_length - 1).bit_length())

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Features:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def frames(self, n_samples: int) -> int:
        """Feature frames for n_samples (torch.stft with center=True)."""
        return 1 + n_samples // self.hop_length

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """[frames, n_mels] float32."""
        import torch

        fb, window = _filterbank(self.n_fft, self.n_mels, self.sample_rate, self.f_min,
                                 self.f_max or self.sample_rate / 2, self.win_length)
        x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        # Constant padding: reflect needs more samples than half a window, which a very short clip lacks.
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length, window=window,
                          center=True, pad_mode="constant", return_complex=True)
        power = spec.abs().pow(2).T  # [frames, n_fft // 2 + 1]
        mel = torch.log(torch.clamp(power @ fb, min=1e-10))
        if self.normalize == "utterance":
            mel = (mel - mel.mean(0, keepdim=True)) / (mel.std(0, keepdim=True, unbiased=False) + 1e-5)
        return mel.numpy().astype(np.float32)


@lru_cache(maxsize=8)
def _filterbank(n_fft: int, n_mels: int, rate: int, f_min: float, f_max: float, win_length: int):
    import torch
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                         max_frequency=f_max, sampling_rate=rate, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(fb.astype(np.float32)), torch.hann_window(win_length)


def normalize_text(text: str, lowercase: bool = True) -> str:
    """Collapse whitespace (and lower-case): what a transcript is compared and trained as."""
    text = " ".join(str(text).split())
    return text.lower() if lowercase else text


def oov_chars(text: str, vocab: str) -> str:
    """Characters of `text` outside `vocab`, in order of first appearance."""
    allowed = set(vocab)
    return "".join(dict.fromkeys(c for c in text if c not in allowed))


def ctc_frames_needed(label: list[int]) -> int:
    """CTC needs a frame per label plus a blank between each pair of repeated labels."""
    return len(label) + sum(1 for a, b in zip(label, label[1:], strict=False) if a == b)
