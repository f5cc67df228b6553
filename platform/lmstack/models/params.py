"""Parameter bookkeeping shared by every task: optimizer groups and counts."""

from __future__ import annotations

from typing import Any

import torch


def default_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay on matrices, none on biases and norms (GPT-2/nanoGPT practice); frozen parameters stay out."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights count once (parameters() yields each tensor once)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
