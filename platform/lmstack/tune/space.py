"""The recipe's search space: dotted-key checks, Ray Tune distributions, trial recipes."""

from __future__ import annotations

import copy
from typing import Any


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            node[p] = {}  # an optional section that was null (e.g. train.early_stopping)
        node = node[p]
    node[leaf] = value


def apply_params(recipe_raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(recipe_raw)
    for key, value in params.items():
        set_dotted(raw, key, value)
    return raw


def _samples(spec: Any) -> list[Any]:
    """Values that stand for the whole range when checking a space against the recipe."""
    if spec.choice is not None or spec.grid is not None:
        return list(spec.choice if spec.choice is not None else spec.grid)
    return list(spec.uniform or spec.loguniform or spec.int_)


def check_values(recipe) -> None:
    """Every bound and choice must give a valid recipe: fail before any trial starts, naming the key."""
    from lmstack.config import RecipeError, validate_recipe

    raw = recipe.model_dump(mode="json")
    raw["tune"] = None
    for key, spec in recipe.tune.space.items():
        for value in _samples(spec):
            try:
                validate_recipe(apply_params(raw, {key: value}), f"tune.space.{key}={value!r}")
            except RecipeError as err:
                raise RecipeError(f"{recipe.name}: {err}") from None
    algo = recipe.tune.search
    for key, spec in recipe.tune.space.items():
        if algo == "grid" and spec.choice is None and spec.grid is None:
            raise RecipeError(f"{recipe.name}: tune.space.{key}: grid search needs grid or choice values")
        if algo == "optuna" and spec.grid is not None:
            raise RecipeError(f"{recipe.name}: tune.space.{key}: optuna samples; use choice instead of grid")


def to_tune_space(space: dict[str, Any], search: str) -> dict[str, Any]:
    """Ray Tune's param_space. Keys stay dotted (flat), so trial names and tables show them as written."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.grid is not None or (search == "grid" and spec.choice is not None):
            out[key] = tune.grid_search(list(spec.grid if spec.grid is not None else spec.choice))
        elif spec.choice is not None:
            out[key] = tune.choice(list(spec.choice))
        elif spec.uniform is not None:
            out[key] = tune.uniform(*spec.uniform)
        elif spec.loguniform is not None:
            out[key] = tune.loguniform(*spec.loguniform)
        else:
            out[key] = tune.randint(spec.int_[0], spec.int_[1] + 1)  # randint's high is exclusive
    return out


def params_of(config: dict[str, Any], space: dict[str, Any]) -> dict[str, Any]:
    """The searched values of a trial's config (Tune adds nothing else, but be explicit)."""
    return {k: config[k] for k in space if k in config}
