"""The HTTP contract shared by the serve stage and the tasks' routes: request schemas, serve settings,
and the record a task hands the ingress (its Serve deployment and its routes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServingTask:
    name: str
    deployment: Any  # a ray.serve Deployment; its user_config is the model entry (path, version, batching)
    add_routes: Callable[[Any, Any], None]  # (FastAPI app, RouteContext) -> None
