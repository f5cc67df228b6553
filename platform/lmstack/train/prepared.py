"""One rule for every verb that needs prepared data: prepare when it is missing or was made from other
settings (the task's prepare_hash), else reuse it."""

from __future__ import annotations

import os
from typing import Any

from lmstack import runtime
from lmstack.artifacts import data_manifest_path, read_data_manifest
from lmstack.config import Recipe
from lmstack.data.read import DataSourceError, list_files
from lmstack.models.loading import require_safetensors
from lmstack.tasks.spec import TaskSpec


def check_model_paths(recipe: Recipe) -> None:
    """Every model directory the recipe names exists and holds safetensors weights: a typo is one line
    naming the key before any data is read or any cluster starts, not a worker's traceback."""
    named = [("model.path", recipe.model.path), ("finetune.from_model", recipe.finetune.from_model),
             ("distill.teacher", recipe.distill.teacher if recipe.distill is not None else None)]
    for key, path in named:
        if path and not runtime.is_uri(path):
            require_safetensors(path, key)
    tok = recipe.tokenizer
    if tok.kind == "pretrained" and tok.path and not runtime.is_uri(tok.path) and not os.path.isdir(tok.path):
        raise FileNotFoundError(f"tokenizer.path {tok.path!r} does not exist")


def ensure_prepared(recipe: Recipe, spec: TaskSpec, log=print) -> dict[str, Any]:
    """The prepared data's manifest, preparing it first when needed."""
    check_model_paths(recipe)
    info = read_data_manifest(recipe)
    if info is not None and info.get("prepare_hash") == spec.prepare_hash(recipe):
        return check_splits(recipe, info)
    list_files(recipe.data.paths)  # a path that matches nothing fails here, before any cluster starts
    if info is not None:
        log(f"{data_manifest_path(recipe)}: prepared from other settings: preparing again")
    else:
        log(f"preparing {recipe.name}'s data in {recipe.data_dir()}")
    return check_splits(recipe, prepare_fresh(recipe, spec, log=log))


def check_splits(recipe: Recipe, info: dict[str, Any]) -> dict[str, Any]:
    """Training needs a block in each split: an empty validation split gave val_loss 0 (a "best" model)
    and a ZeroDivisionError in a worker; it is one line here instead."""
    blocks = info.get("blocks")
    empty = [s for s in ("train", "val") if isinstance(blocks, dict) and blocks.get(s) == 0]
    if empty:
        raise DataSourceError(
            f"{data_manifest_path(recipe)}: the {' and '.join(empty)} split holds no block of "
            f"data.block_size={recipe.data.block_size} tokens: raise data.val_fraction, add data or lower "
            "data.block_size")
    return info


def prepare_fresh(recipe: Recipe, spec: TaskSpec, log=print) -> dict[str, Any]:
    """Prepare again. The old manifest goes first: every prepare writes its manifest last, so a prepare
    that dies half-way leaves no manifest, and no verb takes its half-written shards for data."""
    runtime.connect()
    runtime.remove(data_manifest_path(recipe))
    return spec.prepare(recipe, log=log)
