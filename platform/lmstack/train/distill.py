"""`lmstack distill`: train the recipe's (smaller) model against the distill.teacher on Ray Train.

The run is an ordinary `lmstack train` run (same loop, checkpoints, resume, export) whose task is
wrapped by lmstack.tasks.distill.Distillation; this module checks the teacher before any training,
and writes a summary.json with the keys every finetune run has (strategy "distill").
"""

from __future__ import annotations

import os
import time
from typing import Any

from lmstack import runtime
from lmstack.config import Recipe, RecipeError
from lmstack.tasks import get_task
from lmstack.tasks.distill import check_teacher, load_teacher


def count_params(model) -> tuple[int, int]:
    """(trainable, total) parameters; tied weights count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _ensure_prepared(recipe: Recipe, log) -> dict[str, Any]:
    from lmstack.train.trainer import load_data_info

    if not runtime.exists(runtime.join(recipe.data_dir(), "manifest.json")):
        log(f"preparing {recipe.name}'s data")
        get_task(recipe.task).prepare(recipe, log=log)
    return load_data_info(recipe)


def distill(recipe: Recipe, log=print) -> dict[str, Any]:
    """Distil distill.teacher into the recipe's model; returns (and writes) the run's summary."""
    from lmstack.train.trainer import storage_path, train

    if recipe.distill is None:
        raise RecipeError(f"recipe {recipe.name!r}: `lmstack distill` needs a distill section (teacher: DIR)")
    started = time.time()
    # Train workers need not share the driver's working directory: give them an absolute path.
    recipe = recipe.model_copy(deep=True)
    recipe.distill.teacher = os.path.abspath(recipe.distill.teacher)
    info = _ensure_prepared(recipe, log)
    check_teacher(recipe, info)  # a mismatched tokenizer fails here, before any worker starts
    summary = train(recipe, log=log)  # the generic loop picks Distillation through tasks.task_for

    base = get_task(recipe.task)
    student = load_teacher(base.name, summary["model_dir"])  # same loader: the export is a plain model
    teacher = load_teacher(base.name, recipe.distill.teacher)
    _, total = count_params(student)
    figures = {
        "strategy": "distill",
        **{k: v for k, v in summary.items() if k.startswith("val_")},
        "trainable_params": total,  # every student weight trains
        "total_params": total,
        "teacher": recipe.distill.teacher,
        "teacher_params": count_params(teacher)[1],
        "temperature": recipe.distill.temperature,
        "alpha": recipe.distill.alpha,
        "steps": summary.get("steps"),
        "best_step": summary.get("best_step"),
        "model_dir": summary["model_dir"],
        "checkpoint": summary.get("checkpoint"),
    }
    out = runtime.write_summary(storage_path(recipe), "distill", figures, started)
    log(f"distilled {recipe.name}: student {total:,} params (teacher {figures['teacher_params']:,}); "
        f"model in {figures['model_dir']}")
    return out
