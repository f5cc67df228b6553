"""One module per task; the train loop, tuner and server only speak to the Task protocol."""

from __future__ import annotations

import importlib

from lmstack.config import Recipe
from lmstack.tasks.base import Task

# task name -> "module:class"; a task module is the only place that knows its batch shapes.
TASKS = {
    "lm": "lmstack.tasks.lm:LanguageModeling",
    "classify": "lmstack.tasks.classify:Classification",
    "translate": "lmstack.tasks.translate:Translation",
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; known: {sorted(TASKS)}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_for(recipe: Recipe) -> Task:
    """The task that trains `recipe`: its base task, wrapped in distillation when it has a distill section."""
    task = get_task(recipe.task)
    if recipe.distill is not None:
        from lmstack.tasks.distill import Distillation

        return Distillation(task, recipe.distill)
    return task


__all__ = ["TASKS", "Task", "get_task", "task_for"]
