"""One module per task; the train loop, tuner and server only speak to the Task protocol."""

from __future__ import annotations

from lmstack.tasks.base import Task


def get_task(name: str) -> Task:
    if name == "lm":
        from lmstack.tasks.lm import LanguageModeling

        return LanguageModeling()
    raise ValueError(f"task: unknown task {name!r}")


__all__ = ["Task", "get_task"]
