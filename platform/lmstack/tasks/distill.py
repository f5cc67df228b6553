"""Knowledge distillation as a task wrapper: the generic train loop trains the student unchanged.

`Distillation(base, cfg)` wraps the recipe's own task ("lm" or "classify"). Its `build_model` returns
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

import os
from typing import Any

import torch
import torch.nn.functional as F

from lmstack.config import DistillConfig, Recipe, RecipeError

TEACHER_ATTR = "_lmstack_teacher"


def load_teacher(base_name: str, path: str) -> torch.nn.Module:
    """The teacher as its task exported it (safetensors only), frozen, in eval mode."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"distill.teacher: model directory {path!r} does not exist")
    if base_name == "lm":
        from lmstack.models.factory import load_causal_lm

        model = load_causal_lm(path, use_safetensors=True)
    elif base_name == "classify":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, use_safetensors=True)
    else:
        raise RecipeError(f"distill: task {base_name!r} is not supported (lm, classify)")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def check_teacher(recipe: Recipe, info: dict[str, Any]) -> None:
    """Fail with one line unless the teacher reads the same tokens (and, for classify, the same labels)."""
    from transformers import AutoConfig

    from lmstack.data.tokenizer import load_tokenizer

    cfg = recipe.distill
    assert cfg is not None
    if not os.path.isdir(cfg.teacher):
        raise FileNotFoundError(f"distill.teacher: model directory {cfg.teacher!r} does not exist")
    teacher_cfg = AutoConfig.from_pretrained(cfg.teacher, local_files_only=True)
    vocab = info["tokenizer"]["vocab_size"]
    if teacher_cfg.vocab_size < vocab:
        raise RecipeError(
            f"distill.teacher: {cfg.teacher} has a vocabulary of {teacher_cfg.vocab_size} tokens, the data's "
            f"tokenizer {vocab}: teacher and student must share the tokenizer (tokenizer.kind: pretrained, "
            f"path: the teacher's directory)"
        )
    theirs = load_tokenizer(cfg.teacher).get_vocab()
    ours = load_tokenizer(info["tokenizer"]["dir"]).get_vocab()
    if theirs != ours:
        differ = sorted(set(theirs.items()) ^ set(ours.items()), key=str)[:3]
        raise RecipeError(
            f"distill.teacher: the tokenizer in {cfg.teacher} differs from the data's ({info['tokenizer']['dir']}), "
            f"e.g. {differ}: teacher and student must share the tokenizer"
        )
    labels = info.get("labels")
    if recipe.task == "classify" and labels:
        names = [teacher_cfg.id2label[i] for i in range(len(teacher_cfg.id2label))]
        if names != list(labels):
            raise RecipeError(f"distill.teacher: its labels {names} differ from the data's {list(labels)}")


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher/T) || softmax(student/T)); rows are [N, C]."""
    return F.kl_div(
        F.log_softmax(student.float() / temperature, dim=-1),
        F.log_softmax(teacher.float() / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )


class Distillation:
    """A task that trains the recipe's model against a teacher; everything else is the base task's."""

    name = "distill"

    def __init__(self, base: Any, cfg: DistillConfig):
        self.base = base
        self.cfg = cfg
        self._kl_sum = 0.0
        self._kl_rows = 0
        self._device = torch.device("cpu")

    # Optional hooks (select_metric, param_groups, export_model, eval_counts, logits, predict ...) are
    # the base task's: the student is an ordinary model of that task.
    def __getattr__(self, item: str) -> Any:
        if item in ("base", "cfg"):  # not set yet (unpickling): no recursion
            raise AttributeError(item)
        return getattr(self.base, item)

    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        return self.base.prepare(recipe, log=log)

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        return self.base.datasets(recipe)

    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        student = self.base.build_model(recipe, info)
        teacher = load_teacher(self.base.name, self.cfg.teacher)
        out_t = teacher.get_output_embeddings() if self.base.name == "lm" else None
        out_s = student.get_output_embeddings() if self.base.name == "lm" else None
        if out_t is not None and out_s is not None and out_t.weight.shape[0] != out_s.weight.shape[0]:
            raise RecipeError(
                f"distill.teacher: {out_t.weight.shape[0]} output tokens, the student {out_s.weight.shape[0]}: "
                "teacher and student must share the tokenizer"
            )
        # object.__setattr__ skips nn.Module's registration: the teacher is no submodule of the student.
        object.__setattr__(student, TEACHER_ATTR, teacher)
        return student

    def _logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, C], hard targets [N]) for the rows the loss averages over."""
        if self.base.name == "lm":
            ids = batch["input_ids"].long()
            logits = model(input_ids=ids).logits[:, :-1]
            return logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        return self.base.logits(model, batch), batch["labels"].long()

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        core = getattr(model, "module", model)
        teacher: torch.nn.Module = getattr(core, TEACHER_ATTR)
        device = next(core.parameters()).device
        if next(teacher.parameters()).device != device:  # prepare_model moved the student only
            teacher.to(device)
        self._device = device
        s, target = self._logits(model, batch)
        with torch.no_grad():
            t, _ = self._logits(teacher, batch)
        # classify's balanced class weights ride on the student as a buffer (lmstack.transfer.models)
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

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any], **extra: Any) -> dict[str, float]:
        kl = torch.tensor([self._kl_sum, float(self._kl_rows)], dtype=torch.float64, device=self._device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(kl)  # every rank calls metrics() after the loop's own all-reduce
        self._kl_sum, self._kl_rows = 0.0, 0
        figures = dict(self.base.metrics(loss_sum, count, info, **extra))  # extra: eval_counts' sums
        figures["val_kl"] = float(kl[0] / max(float(kl[1]), 1.0))
        return figures
