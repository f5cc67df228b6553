"""The task registry. Adding a task is its package under tasks/ plus one line in TASKS.

A task package's __init__ is light (pydantic only): it names its recipe section (SECTION, registered
with lmstack.config here) and its spec class (SPEC, "module:Class", imported on first use, since specs
import torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from lmstack.config import Unsupported, register_task

if TYPE_CHECKING:
    from lmstack.tasks.spec import TaskSpec

TASKS = {
    "lm": "lmstack.tasks.lm",
    "classify": "lmstack.tasks.classify",
    "translate": "lmstack.tasks.translate",
    "speech": "lmstack.tasks.speech",
    "recommend": "lmstack.tasks.recommend",
}

for _package in TASKS.values():
    register_task(importlib.import_module(_package).SECTION)

_SPECS: dict[str, TaskSpec] = {}  # noqa: F821


def get_spec(name: str) -> TaskSpec:
    """The task's spec (one instance per process)."""
    if name not in TASKS:
        raise Unsupported(f"task: unknown task {name!r}; known: {sorted(TASKS)}")
    if name not in _SPECS:
        module, cls = importlib.import_module(TASKS[name]).SPEC.split(":")
        _SPECS[name] = getattr(importlib.import_module(module), cls)()
    return _SPECS[name]


__all__ = ["TASKS", "Unsupported", "get_spec"]
