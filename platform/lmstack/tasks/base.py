"""What the generic train loop needs from a task."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from lmstack.config import Recipe


class Task(Protocol):
    """Required methods below. Optional hooks the generic code looks up with getattr:

    - `select_metric: tuple[str, str]` (metric, "min"|"max") that picks the exported checkpoint
      (default ("val_loss", "min"));
    - `param_groups(model, recipe) -> list[dict]` optimizer groups (default: decay / no-decay);
    - `export_model(model, out_dir)` writes the exported weights (default `save_pretrained`); with it,
      checkpoints also keep the training module's own weights for resume;
    - `preflight(recipe, info)` checks inputs on the driver before any cluster work (e.g. that a
      pretrained model fits the prepared data) and raises with the key and path at fault;
    - `eval_counts(model, batch) -> np.ndarray` per validation batch (e.g. a flattened confusion
      matrix); the loop sums them over batches and workers and calls `metrics(..., counts=summed)`.
    """

    name: str

    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        """Raw data -> Parquet splits + manifest.json under recipe.data_dir(); returns the manifest."""

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        """Ray Datasets by split ("train", "val") read from the prepared data."""

    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        """The model to train; `info` is the prepared data's manifest."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Mean loss over the batch and the number of items it averages over."""

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any]) -> dict[str, float]:
        """Validation figures from the summed loss."""
