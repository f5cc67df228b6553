"""k-fold cross-validation inside a Tune trial: one training run per fold, scored by the mean.

Folds follow lmstack.folds: fold i's data is the task's shared k-fold data set, or <data dir>/fold<i>
prepared once per search with fold 0's tokenizer, so all folds (and the exported model) share one vocabulary.
A fold that finished leaves fold_result.json in its run directory: a resumed search skips it and an
interrupted fold resumes from its own checkpoints.
"""

from __future__ import annotations

import statistics
from typing import Any

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.folds import fold_recipe
from lmstack.tasks import get_spec
from lmstack.train.distill_task import spec_for
from lmstack.train.prepared import ensure_prepared
from lmstack.train.trainer import fit

FOLD_RESULT = "fold_result.json"


def prepare_folds(recipe: Recipe, log=print) -> list[dict[str, Any]]:
    """Prepare every fold that is not prepared yet (once, when the task's folds share one data set);
    the manifests, in fold order."""
    spec = get_spec(recipe.task)
    return [ensure_prepared(fold_recipe(recipe, fold, spec.folds_share_data), spec, log=log)
            for fold in range(recipe.data.folds or 0)]


def run_folds(recipe: Recipe, infos: list[dict[str, Any]], run_dir: str, metric: str, mode: str
              ) -> dict[str, Any]:
    """Train every fold in turn; the mean and spread of the folds' best `metric`."""
    pick = min if mode == "min" else max
    spec = spec_for(recipe)
    results = []
    for fold, info in enumerate(infos):
        fold_dir = runtime.join(run_dir, f"fold{fold}")
        done = runtime.join(fold_dir, FOLD_RESULT)
        if not runtime.exists(done):
            sub = fold_recipe(recipe, fold, spec.folds_share_data).model_copy(
                update={"run_dir": fold_dir})
            best, best_metrics, last = fit(sub, info, spec, fold_dir)  # Ray Train, or in process
            if metric not in best_metrics:
                raise RuntimeError(f"fold {fold} of {run_dir} reported no {metric}")
            runtime.write_json(done, {"fold": fold, metric: best_metrics[metric], "best_step": best_metrics.get("step"),
                                      "last_step": last.get("step"),
                                      "checkpoint": best if isinstance(best, str) else best.path})
        results.append(runtime.read_json(done))
    values = [r[metric] for r in results]
    best = pick(results, key=lambda r: r[metric])
    return {
        metric: statistics.fmean(values),
        f"{metric}_std": statistics.pstdev(values),
        "fold_values": values,
        "folds": len(values),
        "step": min(r["last_step"] or 0 for r in results),  # below max_steps: some fold stopped early
        # The exported model of a cross-validated search is the best fold's best checkpoint.
        "checkpoint_path": best["checkpoint"],
    }
