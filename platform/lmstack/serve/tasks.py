"""Which deployment serves a task and which routes it adds: the ingress only reads this registry.

A task module (lm today; classify, translate, recommend, speech later) defines a Serve deployment
class and `add_routes(app, ctx)`, and either is listed in TASK_MODULES or calls `register_task` on
import. The ingress, metrics, auth and feedback stay unchanged when a task is added.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TASK_MODULES = {
    "lm": "lmstack.serve.lm",
    "classify": "lmstack.serve.classify",
    "translate": "lmstack.serve.translate",
}


@dataclass(frozen=True)
class ServingTask:
    name: str
    deployment: Any  # a ray.serve Deployment; its user_config is the model entry (path, version, batching)
    add_routes: Callable[[Any, Any], None]  # (FastAPI app, RouteContext) -> None


_TASKS: dict[str, ServingTask] = {}


def register_task(task: ServingTask) -> None:
    _TASKS[task.name] = task


def get_task(name: str) -> ServingTask:
    if name not in _TASKS and name in TASK_MODULES:
        importlib.import_module(TASK_MODULES[name])  # registers itself on import
    if name not in _TASKS:
        known = sorted(set(_TASKS) | set(TASK_MODULES))
        raise ValueError(f"no serving support for task {name!r}; known tasks: {known}")
    return _TASKS[name]
