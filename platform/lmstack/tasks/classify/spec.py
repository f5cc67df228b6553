"""Text classification: a sequence-classification head on the decoder LM, class ids as labels.

The generic train loop calls loss() and, on validation, eval_counts() (confusion counts that it sums
over batches and workers) and metrics(). predict() and evaluate_file() work on any exported
classify model directory, whatever strategy made it (transformers, or the sklearn strategies).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmstack import runtime
from lmstack.config import Recipe, RecipeError
from lmstack.models import default_param_groups
from lmstack.tasks.classify.metrics import confusion, flat_metrics
from lmstack.tasks.report import ReportPart, RunRecord
from lmstack.tasks.spec import TaskSpec

LABEL_COLUMNS_PREFIX = "labels"


def _forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(input_ids=batch["input_ids"].long(), attention_mask=batch["attention_mask"].long())
    if isinstance(out, tuple):  # MultiTaskClassifier: (primary logits, {field: logits})
        return out[0], out[1]
    return out.logits, {}


def _ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Sum-then-divide, so a batch in which a head has no labels (all -100) adds 0, not NaN."""
    n = int((labels != -100).sum())
    total = F.cross_entropy(logits.float(), labels.long(), weight=weight, ignore_index=-100, reduction="sum")
    if weight is not None:  # weighted mean, as cross_entropy's "mean" reduction defines it
        denom = weight[labels[labels != -100].long()].sum()
        return total / denom.clamp_min(1e-12), n
    return total / max(n, 1), n


class Classification(TaskSpec):
    name = "classify"
    section = "classify"
    select_metric = ("val_macro_f1", "max")
    reported_metrics = ("val_loss", "val_accuracy", "val_macro_f1", "val_macro_precision", "val_macro_recall")
    compress_kind = "sequence_classifier"
    exports_own_format = True  # LoRA exports merged weights, multitask its primary head
    folds_share_data = True  # prepare writes cv/ with a fold column: one data set serves every fold

    # -- data ------------------------------------------------------------------------------
    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        from lmstack.tasks.classify.prepare import prepare_classify

        return prepare_classify(recipe, log=log)

    def prepare_hash(self, recipe: Recipe) -> str:
        from lmstack.tasks.classify.prepare import prepare_hash

        return prepare_hash(recipe)

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        import ray.data

        data_dir = recipe.data_dir()
        info = runtime.read_json(runtime.join(data_dir, "manifest.json"))
        cols = ["input_ids", "attention_mask", "labels", *(f"labels_{f}" for f in info.get("extra_labels", {}))]
        if recipe.data.folds:
            if info.get("folds") != recipe.data.folds:
                raise ValueError(f"{data_dir} was prepared with folds={info.get('folds')}, the recipe has "
                                 f"data.folds={recipe.data.folds}: prepare again")
            k = recipe.data.fold
            cv = ray.data.read_parquet(runtime.join(data_dir, "cv"), columns=[*cols, "fold"])
            return {
                "train": cv.filter(lambda r: r["fold"] != k).drop_columns(["fold"]),
                "val": cv.filter(lambda r: r["fold"] == k).drop_columns(["fold"]),
            }
        return {split: ray.data.read_parquet(runtime.join(data_dir, split), columns=cols) for split in ("train", "val")}

    # -- model -----------------------------------------------------------------------------
    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        from lmstack.tasks.classify.models import build_classifier

        return build_classifier(recipe, info)

    def param_groups(self, model: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
        from lmstack.tasks.classify.models import layer_decay_groups, num_layers

        decay = recipe.finetune.layer_lr_decay
        if decay is None or recipe.finetune.strategy not in ("full", "freeze"):
            return default_param_groups(model, recipe.train.weight_decay)
        return layer_decay_groups(model, num_layers(model.config), decay, recipe.train.weight_decay)

    def export(self, model: torch.nn.Module, out_dir: str) -> None:
        from lmstack.tasks.classify.models import export_classifier

        export_classifier(model, out_dir)

    # -- training and evaluation -----------------------------------------------------------
    def logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, C] scores of the primary label; batch["labels"] holds the class ids."""
        return _forward(model, batch)[0]

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        logits, extras = _forward(model, batch)
        core = getattr(model, "module", model)
        weight = getattr(core, "lmstack_class_weights", None)
        loss, n = _ce(logits, batch["labels"], weight)
        for name, head_logits in extras.items():  # multi-task: the heads share the backbone's gradient
            extra, _ = _ce(head_logits, batch[f"labels_{name}"], None)
            loss = loss + extra
        return loss, n

    def eval_counts(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray | None:
        """The primary head's confusion counts, then each extra head's (multitask), flattened end to end."""
        logits, extras = _forward(model, batch)
        parts = [(logits, batch["labels"])] + [(head, batch[f"labels_{f}"]) for f, head in extras.items()]
        return np.concatenate([
            confusion(labels.cpu().numpy(), head.argmax(-1).cpu().numpy(), head.shape[-1]).ravel()
            for head, labels in parts
        ])

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any],
                counts: np.ndarray | None = None) -> dict[str, float]:
        out = {"val_loss": loss_sum / max(count, 1)}
        if counts is None:
            return out
        counts = np.asarray(counts)
        c = len(info["labels"])
        out.update(flat_metrics(counts[: c * c].reshape(c, c)))
        at = c * c
        for field, values in (info.get("extra_labels") or {}).items():  # the model's heads, in this order
            k = len(values)
            if counts.size >= at + k * k:
                out.update(flat_metrics(counts[at: at + k * k].reshape(k, k), prefix=f"val_{field}_"))
            at += k * k
        return out

    def runs_without_trainer(self, recipe: Recipe) -> bool:
        from lmstack.tasks.classify.strategies import SKLEARN_STRATEGIES

        return recipe.finetune.strategy in SKLEARN_STRATEGIES

    def fit_without_trainer(self, recipe: Recipe, info: dict[str, Any], log: Any = print) -> dict[str, Any]:
        from lmstack.tasks.classify.run import run_sklearn

        return run_sklearn(recipe, info, log=log)

    def exported_figures(self, recipe: Recipe, info: dict[str, Any], model_dir: str, run_dir: str) -> dict[str, Any]:
        from lmstack.tasks.classify.run import exported_figures

        return exported_figures(recipe, info, model_dir, run_dir)

    def report_parts(self, run: RunRecord) -> list[ReportPart]:
        from lmstack.tasks.classify.report import confusion_parts

        return confusion_parts(run) + super().report_parts(run)

    # -- distill, serving -------------------------------------------------------------------
    def load_exported(self, model_dir: str) -> torch.nn.Module:
        from transformers import AutoModelForSequenceClassification

        from lmstack.models.loading import load_pretrained

        return load_pretrained(AutoModelForSequenceClassification, model_dir)

    def distill_logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits(model, batch), batch["labels"].long()

    def check_teacher(self, recipe: Recipe, info: dict[str, Any], teacher_dir: str) -> None:
        from transformers import AutoConfig

        from lmstack.models.teacher import check_same_tokenizer

        check_same_tokenizer(teacher_dir, info)
        cfg = AutoConfig.from_pretrained(teacher_dir, local_files_only=True)
        names = [cfg.id2label[i] for i in range(len(cfg.id2label))]
        if info.get("labels") and names != list(info["labels"]):
            raise RecipeError(f"distill.teacher: its labels {names} differ from the data's {list(info['labels'])}")

    def serving(self) -> Any:
        from lmstack.tasks.classify.serve import SERVING

        return SERVING

    def predict(self, model_dir: str, texts: list[str], **opts: Any) -> list[dict[str, Any]]:
        """[{"label": str, "scores": {label: probability}}] for each text."""
        from lmstack.tasks.classify.predict import predict_proba

        labels, probs = predict_proba(model_dir, texts, **opts)
        return [
            {"label": labels[int(row.argmax())], "scores": {lab: float(p) for lab, p in zip(labels, row, strict=True)}}
            for row in probs
        ]

    def evaluate_file(self, model_dir: str, path: str, **opts: Any) -> dict[str, Any]:
        """Metrics of the model on a labelled file (fields from opts, else the model's recipe)."""
        from lmstack.tasks.classify.predict import evaluate_file

        return evaluate_file(model_dir, path, **opts)
