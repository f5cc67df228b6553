"""One module per task; the train loop, tuner and server only speak to the Task protocol."""

from __future__ import annotations

import importlib

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


__all__ = ["TASKS", "Task", "get_task"]
