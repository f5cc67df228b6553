"""The task contract: one `TaskSpec` per task owns everything task-specific.

Generic code (the trainer, tuner, evaluate, compress, distill, the serve ingress and the CLI) names no
task: it asks the spec found by `lmstack.tasks.get_spec(name)`. Every method has a working default or
is abstract; nothing is looked up with getattr. A task that cannot do something (compress a
recommender, distill a translator) says so with `Unsupported`, which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np
import torch

from lmstack import runtime
from lmstack.config import Recipe, Section, Unsupported
from lmstack.models.params import default_param_groups
from lmstack.tasks.report import ReportPart, RunRecord, curves, final_values


class TaskSpec(ABC):
    name: ClassVar[str]
    # The recipe section this task owns (its config model, registered with lmstack.config), if any.
    section: ClassVar[str | None] = None
    section_model: ClassVar[type[Section] | None] = None
    section_required: ClassVar[bool] = False
    # Top-level recipe sections that shape a checkpoint's tensors, beyond the generic ones the trainer
    # always fingerprints (task, model, tokenizer, data, finetune, distill and `section`).
    resume_sections: ClassVar[tuple[str, ...]] = ()
    # Validation metrics the task reports (early_stopping.metric and tune.metric must name one).
    reported_metrics: ClassVar[tuple[str, ...]] = ("val_loss",)
    # The metric (and its direction) that picks the exported checkpoint.
    select_metric: ClassVar[tuple[str, str]] = ("val_loss", "min")
    # k-fold: True when one prepared data set holds every fold (a fold column), so folds share it;
    # False when each fold is prepared on its own (fold 0's tokenizer is then reused by the others).
    folds_share_data: ClassVar[bool] = False
    # True when export() writes something other than the training module's save_pretrained (a merged
    # LoRA, one head of a multi-task model): checkpoints then also keep the module's own weights for resume.
    exports_own_format: ClassVar[bool] = False

    # -- recipe ---------------------------------------------------------------------------------
    def check_recipe(self, recipe: Recipe) -> None:
        """Cross-section checks that need the task (raise RecipeError naming the key). Default: none."""

    # -- data -----------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        """Raw data -> Parquet splits + manifest.json under recipe.data_dir(); returns the manifest.
        The manifest carries `prepare_hash` = self.prepare_hash(recipe)."""

    def prepare_hash(self, recipe: Recipe) -> str:
        """What the prepared data depends on (not where it is written); a different value means prepare again."""
        dumped = recipe.model_dump(mode="json")
        dumped["data"].pop("output", None)
        return runtime.fingerprint({s: dumped.get(s) for s in ("data", "tokenizer", self.section) if s})

    @abstractmethod
    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        """Ray Datasets by split ("train", "val") read from the prepared data (lazily, no materialize)."""

    # -- model and training ---------------------------------------------------------------------
    def preflight(self, recipe: Recipe, info: dict[str, Any]) -> None:
        """Checks on the driver before any cluster work (e.g. a pretrained model fits the data)."""

    @abstractmethod
    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        """The model to train; `info` is the prepared data's manifest."""

    def param_groups(self, model: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
        """Optimizer groups; a group may carry "lr_scale". Default: decay on matrices only."""
        return default_param_groups(model, recipe.train.weight_decay)

    @abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        """Mean loss over the batch and the number of items it averages over."""

    def eval_counts(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray | None:
        """Per validation batch counts (e.g. a flattened confusion matrix) that the loop sums over
        batches and workers and hands to metrics(counts=...). Default: none."""
        return None

    @abstractmethod
    def metrics(self, loss_sum: float, count: int, info: dict[str, Any],
                counts: np.ndarray | None = None) -> dict[str, float]:
        """Validation figures from the summed loss (and the summed eval_counts)."""

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Items a training batch feeds the model, for the throughput figure."""
        ids = batch.get("input_ids")
        return int(ids.numel()) if ids is not None else 0

    def export(self, model: torch.nn.Module, out_dir: str) -> None:
        """Write the exported weights (safetensors) into out_dir."""
        model.save_pretrained(out_dir, safe_serialization=True)

    def export_assets(self, info: dict[str, Any], out_dir: str) -> None:
        """Files an exported model needs beside its weights (tokenizer, vocabulary, feature settings).
        Default: the prepared data's tokenizer, saved with save_pretrained."""
        tok_dir = (info.get("tokenizer") or {}).get("dir")
        if tok_dir:
            from lmstack.data.tokenizer import load_tokenizer

            with runtime.local_dir(tok_dir) as local:
                load_tokenizer(local).save_pretrained(out_dir)


    def runs_without_trainer(self, recipe: Recipe) -> bool:
        """True when this recipe fits without gradient training (e.g. a scikit-learn head)."""
        return False

    def fit_without_trainer(self, recipe: Recipe, info: dict[str, Any], log: Any = print) -> dict[str, Any]:
        """The fit when runs_without_trainer(recipe): export <run_dir>/model, write and return the summary."""
        raise Unsupported(f"task {self.name!r} trains with the trainer only")

    def exported_figures(self, recipe: Recipe, info: dict[str, Any], model_dir: str, run_dir: str) -> dict[str, Any]:
        """Figures of the exported model (as served) that join the run's summary, e.g. held-out test scores."""
        return {}

    def report_parts(self, run: RunRecord) -> list[ReportPart]:
        """The task's figures in the run's report.html. Default: its reported metrics beyond the loss
        (e.g. HR/NDCG, WER/CER) per step, and their last and best values."""
        keys = [m for m in self.reported_metrics if m != "val_loss"]
        parts = []
        image = curves(run.rows, keys, f"{self.name}: validation metrics")
        if image is not None:
            parts.append(ReportPart("Task metrics per step", png=image, table=final_values(run.rows, keys)))
        return parts

    # -- inference on exported models ----------------------------------------------------------
    def predict(self, model_dir: str, inputs: list[str], **opts: Any) -> list[dict[str, Any]]:
        raise Unsupported(f"task {self.name!r} has no `lmstack predict`")

    def evaluate_file(self, model_dir: str, path: str, **opts: Any) -> dict[str, Any]:
        raise Unsupported(f"task {self.name!r} scores its validation split: give its recipe to `lmstack evaluate`")

    def add_cli_options(self, parser: argparse.ArgumentParser) -> None:
        """Task options of `predict` / `evaluate --model` (e.g. translate's --direction). They reach
        predict()/evaluate_file() as keyword arguments when given; names must not clash across tasks."""

    def cli_option_names(self) -> tuple[str, ...]:
        parser = argparse.ArgumentParser(add_help=False)
        self.add_cli_options(parser)
        return tuple(a.dest for a in parser._actions)

    # -- serving --------------------------------------------------------------------------------
    def serving(self) -> Any:
        """The task's `lmstack.api.ServingTask` (Serve deployment + routes), or Unsupported."""
        raise Unsupported(f"task {self.name!r} cannot be served yet")

    # -- distill / compress ---------------------------------------------------------------------
    def load_exported(self, model_dir: str) -> torch.nn.Module:
        """The torch module of an exported directory (safetensors only), e.g. a distillation teacher."""
        raise Unsupported(f"task {self.name!r}: loading an exported model as a module is not supported")

    def distill_logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, C], hard targets [N]) that distillation matches between teacher and student."""
        raise Unsupported(f"distill: task {self.name!r} does not support distillation")

    def check_teacher(self, recipe: Recipe, info: dict[str, Any], teacher_dir: str) -> None:
        """Refuse a teacher that does not read the data the same way (raise RecipeError), before any
        cluster work. A task that distils overrides this with its checks."""
        raise Unsupported(f"distill: task {self.name!r} does not support distillation")

    compress_kind: ClassVar[str | None] = None  # "causal_lm" | "sequence_classifier": what compress loads
