"""Linear warmup then cosine decay to min_lr (the nanoGPT / GPT-3 schedule)."""

from __future__ import annotations

import math


def lr_at(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    progress = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
