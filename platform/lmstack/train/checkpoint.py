"""Checkpoints: the model as a transformers directory plus everything needed to resume exactly.

Written to a local temporary directory on rank 0 and handed to ray.train.report, which copies it
to storage and only then records it, so a checkpoint is either complete or absent.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

MODEL_DIR = "model"
STATE_FILE = "train_state.pt"
# Written when a task exports something other than the training module (a merged LoRA, a multi-task
# model's primary head): the training module's own weights, which a resume loads.
RESUME_WEIGHTS = "resume_model.safetensors"


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # data position: batches of this epoch already consumed
    best_metric: float | None = None
    evals_without_improvement: int = 0
    tokens_seen: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def rng_state() -> dict[str, Any]:
    """Every generator's state in types that torch.load(weights_only=True) accepts (no numpy objects)."""
    version, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": {"version": version, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["version"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


def save(path: str, model: torch.nn.Module, optimizer, scheduler, progress: Progress,
         export: Callable[[torch.nn.Module, str], None], own_format: bool = False) -> None:
    """`export(model, dir)` (the task spec's) writes MODEL_DIR. With `own_format` (the export is not the
    training module's own state, e.g. merged LoRA weights) the module's weights are kept beside it."""
    export(model, os.path.join(path, MODEL_DIR))
    if own_format:
        from safetensors.torch import save_model

        save_model(model, os.path.join(path, RESUME_WEIGHTS))  # handles tied (shared) tensors
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": asdict(progress),
        "rng": rng_state(),
    }
    torch.save(state, os.path.join(path, STATE_FILE))


def load(path: str, model: torch.nn.Module, optimizer, scheduler) -> Progress:
    from safetensors.torch import load_file, load_model

    if os.path.exists(os.path.join(path, RESUME_WEIGHTS)):
        load_model(model, os.path.join(path, RESUME_WEIGHTS))
    else:
        weights = load_file(os.path.join(path, MODEL_DIR, "model.safetensors"))
        model.load_state_dict(weights, strict=False)  # tied weights are stored once
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    # weights_only: a checkpoint on shared storage must not be able to run code when loaded.
    state = torch.load(os.path.join(path, STATE_FILE), weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return Progress(**state["progress"])
