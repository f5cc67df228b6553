"""Artifact conventions every stage shares: run/data directories, the prepared-data manifest and the
exported model's lineage file (`lmstack_model.json`)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from lmstack import runtime
from lmstack.config import Recipe

T = TypeVar("T")
MODEL_MANIFEST = "lmstack_model.json"
DATA_MANIFEST = "manifest.json"


def storage_path(recipe: Recipe) -> str:
    """The recipe's run directory, absolute when local (Ray workers do not share the driver's cwd)."""
    run_dir = recipe.resolved_run_dir()
    return run_dir if runtime.is_uri(run_dir) else os.path.abspath(run_dir)


def data_manifest_path(recipe: Recipe) -> str:
    return runtime.join(recipe.data_dir(), DATA_MANIFEST)


def read_data_manifest(recipe: Recipe) -> dict[str, Any] | None:
    path = data_manifest_path(recipe)
    return runtime.read_json(path) if runtime.exists(path) else None


def model_manifest(model_dir: str) -> dict[str, Any]:
    """An exported model's lineage; a directory without one was not exported by lmstack."""
    path = os.path.join(model_dir, MODEL_MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: a model directory must be one exported by lmstack")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def model_task(model_dir: str) -> str:
    return model_manifest(model_dir).get("task", "lm")


def export_stamp(model_dir: str) -> tuple[int, int]:
    """Identifies one export of a model directory: an export publishes a new directory (a rename), so a
    re-export to the same path changes the stamp even when its files have the same names."""
    st = os.stat(model_dir)
    return st.st_ino, st.st_mtime_ns


def cache_per_export(maxsize: int = 8) -> Callable[[Callable[[str], T]], Callable[[str], T]]:
    """Cache a loader by (path, export_stamp), so a model re-exported to a served path is loaded again
    instead of answering with the old weights under the new version."""

    def wrap(load: Callable[[str], T]) -> Callable[[str], T]:
        cached = functools.lru_cache(maxsize=maxsize)(lambda path, _stamp: load(path))

        @functools.wraps(load)
        def loader(model_dir: str) -> T:
            if not os.path.isdir(model_dir):
                raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
            return cached(model_dir, export_stamp(model_dir))

        loader.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return loader

    return wrap
