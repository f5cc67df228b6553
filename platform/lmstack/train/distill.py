"""`lmstack distill`: train the recipe's (smaller) model against the distill.teacher on Ray Train.

The run is an ordinary `lmstack train` run (same loop, checkpoints, resume, export) whose task is
wrapped by lmstack.train.distill_task.Distillation; this module checks the teacher before any training,
and writes a summary.json with the keys every finetune run has (strategy "distill").
"""

from __future__ import annotations

import os
import time
from typing import Any

from lmstack import runtime
from lmstack.artifacts import storage_path
from lmstack.config import Recipe, RecipeError
from lmstack.models import count_params
from lmstack.tasks import get_spec
from lmstack.tracking.finish import finish_run
from lmstack.train.distill_task import load_teacher
from lmstack.train.trainer import train


def distill(recipe: Recipe, log=print) -> dict[str, Any]:
    """Distil distill.teacher into the recipe's model; returns (and writes) the run's summary."""
    if recipe.distill is None:
        raise RecipeError(f"recipe {recipe.name!r}: `lmstack distill` needs a distill section (teacher: DIR)")
    started = time.time()
    # Train workers need not share the driver's working directory: give them an absolute path.
    recipe = recipe.model_copy(deep=True)
    recipe.distill.teacher = os.path.abspath(recipe.distill.teacher)
    # train() checks the teacher against the prepared data before any worker starts, and trains
    # through the Distillation spec (lmstack.train.distill_task.spec_for).
    summary = train(recipe, log=log, finish=False)

    base = get_spec(recipe.task)
    student = load_teacher(base, summary["model_dir"])  # same loader: the export is a plain model
    teacher = load_teacher(base, recipe.distill.teacher)
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
    finish_run(recipe, storage_path(recipe), log=log, verb="distill")
    log(f"distilled {recipe.name}: student {total:,} params (teacher {figures['teacher_params']:,}); "
        f"model in {figures['model_dir']}")
    return out
