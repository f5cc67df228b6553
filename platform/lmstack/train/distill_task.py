"""Knowledge distillation as a task wrapper: the generic train loop trains the student unchanged.

`Distillation(base, cfg)` wraps the recipe's own task spec (any task whose spec gives distill_logits). Its `build_model` returns
the student (the recipe's model) with the frozen teacher attached as a plain attribute, *not* a
registered submodule, so DDP, the optimizer, checkpoints and `save_pretrained` only ever see the
student. The training loss is

    alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * hard loss

(Hinton et al. 2015; T^2 keeps the soft gradients' scale independent of T). On validation the loss
is the hard loss alone, so the base task's metrics (val_loss / val_macro_f1 ...) and its checkpoint
choice mean what they mean for any other run; the KL to the teacher is reported beside them as
`val_kl` (at temperature T, per token or per example).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmstack.config import DistillConfig, Recipe, RecipeError
from lmstack.tasks import get_spec
from lmstack.tasks.spec import TaskSpec

TEACHER_ATTR = "_lmstack_teacher"


def spec_for(recipe: Recipe) -> TaskSpec:
    """The spec that trains `recipe`: its task's, wrapped in distillation when it has a distill section."""
    spec = get_spec(recipe.task)
    return Distillation(spec, recipe.distill) if recipe.distill is not None else spec


def load_teacher(spec: TaskSpec, path: str) -> torch.nn.Module:
    """The teacher as its task exported it (safetensors only), frozen, in eval mode."""
    model = spec.load_exported(path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher/T) || softmax(student/T)); rows are [N, C]."""
    return F.kl_div(
        F.log_softmax(student.float() / temperature, dim=-1),
        F.log_softmax(teacher.float() / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )


class Distillation(TaskSpec):
    """A spec that trains the recipe's model against a teacher; everything else is the base task's."""

    def __init__(self, base: TaskSpec, cfg: DistillConfig):
        self.base = base
        self.cfg = cfg
        self.name = base.name
        self.select_metric = base.select_metric
        self.reported_metrics = (*base.reported_metrics, "val_kl")
        self.exports_own_format = base.exports_own_format
        self._kl_sum = 0.0
        self._kl_rows = 0
        self._device = torch.device("cpu")

    # The student is an ordinary model of the base task: data, export and metrics are the base's.
    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        return self.base.prepare(recipe, log=log)

    def prepare_hash(self, recipe: Recipe) -> str:
        return self.base.prepare_hash(recipe)

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        return self.base.datasets(recipe)

    def param_groups(self, model: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
        return self.base.param_groups(model, recipe)

    def export(self, model: torch.nn.Module, out_dir: str) -> None:
        self.base.export(model, out_dir)

    def export_assets(self, info: dict[str, Any], out_dir: str) -> None:
        self.base.export_assets(info, out_dir)

    def check_teacher(self, recipe: Recipe, info: dict[str, Any], teacher_dir: str) -> None:
        self.base.check_teacher(recipe, info, teacher_dir)

    def preflight(self, recipe: Recipe, info: dict[str, Any]) -> None:
        self.base.preflight(recipe, info)

    def eval_counts(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray | None:
        return self.base.eval_counts(model, batch)

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return self.base.batch_tokens(batch)

    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        student = self.base.build_model(recipe, info)
        teacher = load_teacher(self.base, self.cfg.teacher)
        out_t, out_s = teacher.get_output_embeddings(), student.get_output_embeddings()
        if out_t is not None and out_s is not None and out_t.weight.shape[0] != out_s.weight.shape[0]:
            raise RecipeError(
                f"distill.teacher: {out_t.weight.shape[0]} outputs, the student {out_s.weight.shape[0]}: "
                "teacher and student must share the tokenizer (and labels)"
            )
        # object.__setattr__ skips nn.Module's registration: the teacher is no submodule of the student.
        object.__setattr__(student, TEACHER_ATTR, teacher)
        return student

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        core = getattr(model, "module", model)
        teacher: torch.nn.Module = getattr(core, TEACHER_ATTR)
        device = next(core.parameters()).device
        if next(teacher.parameters()).device != device:  # prepare_model moved the student only
            teacher.to(device)
        self._device = device
        s, target = self.base.distill_logits(model, batch)
        with torch.no_grad():
            t, _ = self.base.distill_logits(teacher, batch)
        # classify's balanced class weights ride on the student as a buffer (lmstack.tasks.classify.models)
        hard = F.cross_entropy(s.float(), target, weight=getattr(core, "lmstack_class_weights", None))
        T = self.cfg.temperature
        kl = soft_kl(s, t, T)
        if not model.training:
            # Validation: the hard loss feeds the base task's metrics; the KL is summed on the side.
            self._kl_sum += float(kl) * s.shape[0]
            self._kl_rows += s.shape[0]
            return hard, s.shape[0]
        a = self.cfg.alpha
        return a * T * T * kl + (1 - a) * hard, s.shape[0]

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any],
                counts: np.ndarray | None = None) -> dict[str, float]:
        kl = torch.tensor([self._kl_sum, float(self._kl_rows)], dtype=torch.float64, device=self._device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(kl)  # every rank calls metrics() after the loop's own all-reduce
        self._kl_sum, self._kl_rows = 0.0, 0
        figures = dict(self.base.metrics(loss_sum, count, info, counts=counts))
        figures["val_kl"] = float(kl[0] / max(float(kl[1]), 1.0))
        return figures
