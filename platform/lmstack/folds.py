"""k-fold recipes, one layout for every verb: fold i's run in <run_dir>/fold<i>; its data either the
shared prepared data (a fold column) or <data dir>/fold<i> with fold 0's tokenizer."""

from __future__ import annotations

from lmstack import runtime
from lmstack.config import Recipe, validate_recipe


def fold_data_dir(recipe: Recipe, fold: int) -> str:
    return runtime.join(recipe.data_dir(), f"fold{fold}")


def fold_recipe(recipe: Recipe, fold: int, shared_data: bool, run_dir: str | None = None) -> Recipe:
    """`recipe` restricted to fold `fold` of data.folds; with run_dir, its run goes to <run_dir>/fold<fold>."""
    raw = recipe.model_dump(mode="json")
    raw["tune"] = None
    raw["data"]["fold"] = fold
    if shared_data:
        raw["data"]["output"] = recipe.data_dir()
    else:
        raw["data"]["output"] = fold_data_dir(recipe, fold)
        if fold > 0:  # every fold, and so the exported model, shares fold 0's vocabulary
            raw["tokenizer"] = {**raw["tokenizer"], "kind": "pretrained",
                                "path": runtime.join(fold_data_dir(recipe, 0), "tokenizer")}
    if run_dir is not None:
        raw["run_dir"] = runtime.join(run_dir, f"fold{fold}")
    return validate_recipe(raw, f"{recipe.name} fold {fold}")
