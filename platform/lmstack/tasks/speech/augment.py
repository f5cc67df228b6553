"""Training-only augmentation. Waveform copies (speed perturbation, additive noise) are made once in
prepare, as extra training rows; SpecAugment masks are drawn afresh for every training batch."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from lmstack.tasks.speech.audio import add_noise, change_speed


def copies(cfg: Any) -> list[dict[str, Any]]:
    """The variants of each training utterance: the original, one per speed, `noise_copies` noisy ones.
    `cfg` is the recipe's speech.augment."""
    out = [{"aug": "orig", "speed": 1.0, "noise": False}]
    out += [{"aug": f"speed{s:g}", "speed": float(s), "noise": False} for s in cfg.speeds]
    out += [{"aug": f"noise{i}", "speed": 1.0, "noise": True} for i in range(cfg.noise_copies)]
    return out


def perturb(wave: np.ndarray, utt_id: str, aug: str, speed: float, noise: bool,
            snr_range: tuple[float, float]) -> np.ndarray:
    """One variant of `wave`; its random draws are seeded by the utterance and variant, so a re-prepare
    writes the same rows."""
    if speed != 1.0:
        wave = change_speed(wave, speed)
    if noise:
        seed = int.from_bytes(hashlib.sha256(f"{utt_id}|{aug}".encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        wave = add_noise(wave, float(rng.uniform(*snr_range)), rng)
    return wave


def spec_augment(features: torch.Tensor, lengths: torch.Tensor, time_masks: int, time_width: int,
                 freq_masks: int, freq_width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment (Park et al. 2019) without time warping: zero `freq_masks` bands of up to freq_width
    mel bins and `time_masks` spans of up to time_width frames (never more than a fifth of an utterance)
    per utterance. Features are normalized per utterance, so zero is the mean. Returns a new tensor."""
    x = features.clone()
    b, t, f = x.shape
    dev = x.device
    for i in range(b):
        n = int(lengths[i])
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, f - w + 1), (1,), generator=generator))
            x[i, :, start:start + w] = 0
        cap = min(time_width, max(0, n // 5))
        for _ in range(time_masks):
            w = int(torch.randint(0, cap + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, n - w + 1), (1,), generator=generator))
            x[i, start:start + w, :] = 0
    return x.to(dev)
