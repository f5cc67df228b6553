"""`lmstack finetune`: one run of the recipe (its finetune section says how a pretrained model transfers),
or k folds of it in parallel on the cluster. Generic over tasks: a spec may fit without the trainer
(e.g. scikit-learn heads) and adds figures of its exported model to the summary."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import numpy as np

from lmstack import runtime
from lmstack.artifacts import storage_path
from lmstack.config import Recipe
from lmstack.folds import fold_recipe
from lmstack.models import count_params
from lmstack.tasks import get_spec
from lmstack.tracking.finish import finish_run
from lmstack.tracking.mlflow_log import recipe_uri
from lmstack.train.prepared import ensure_prepared
from lmstack.train.trainer import train

quiet = lambda *_: None  # noqa: E731


def absolute_paths(recipe: Recipe) -> Recipe:
    """Local paths made absolute: Ray workers do not share the driver's working directory."""
    raw = recipe.model_dump(mode="json")
    if raw["finetune"]["from_model"] and not runtime.is_uri(raw["finetune"]["from_model"]):
        raw["finetune"]["from_model"] = os.path.abspath(raw["finetune"]["from_model"])
    for section, key in (("data", "output"), ("tokenizer", "path"), (None, "run_dir")):
        node = raw[section] if section else raw
        value = node.get(key) or (recipe.resolved_run_dir() if key == "run_dir" else None)
        if value and not runtime.is_uri(value):
            node[key] = os.path.abspath(value)
    return Recipe.model_validate(raw)


def finetune(recipe: Recipe, log=print) -> dict[str, Any]:
    """Prepare if needed, fit the recipe (trainer or the task's own fit), write summary.json."""
    recipe = absolute_paths(recipe)
    spec = get_spec(recipe.task)
    info = ensure_prepared(recipe, spec, log=log)
    runtime.connect()
    run_dir = storage_path(recipe)
    if spec.runs_without_trainer(recipe):
        summary = spec.fit_without_trainer(recipe, info, log=log)
        finish_run(recipe, run_dir, log=log, verb="finetune")
        return summary
    started = time.time()
    trainable, total = count_params(spec.build_model(recipe, info))
    summary = train(recipe, log=log, finish=False)
    figures = {**{k: v for k, v in summary.items() if k not in ("verb", "wall_time_s")},
               "trainable_params": trainable, "total_params": total,
               **spec.exported_figures(recipe, info, summary["model_dir"], run_dir)}
    summary = runtime.write_summary(run_dir, "finetune", figures, started)
    finish_run(recipe, run_dir, log=log, verb="finetune")
    return summary


def kfold(recipe: Recipe, k: int, log=print) -> dict[str, Any]:
    """k runs, fold i validating on fold i, in parallel as Ray tasks (each a normal finetune run: a
    TorchTrainer, whose workers take the CPUs, or a 1-CPU task for a fit without the trainer)."""
    import ray

    started = time.time()
    recipe = absolute_paths(recipe)  # the folds must agree on what was prepared
    spec = get_spec(recipe.task)
    metric, mode = spec.select_metric
    run_dir = recipe.resolved_run_dir()
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"folds": k})})
    # The folds (run directories below this one) log to this run's store, not one of their own.
    uri = recipe_uri(recipe, run_dir)
    if uri is not None:
        recipe = recipe.model_copy(update={"tracking": recipe.tracking.model_copy(update={"uri": uri})})
    folds = [fold_recipe(recipe, i, spec.folds_share_data, run_dir) for i in range(k)]
    ensure_prepared(folds[0], spec, log=log)  # shared data: every fold reads this; else fold 0's tokenizer
    runtime.connect()
    # A trainer fold's task only waits on its TorchTrainer, whose workers hold the CPUs; a fold that fits
    # in process (no trainer, or train.in_process) holds them itself.
    cfg = recipe.train
    fits_here = spec.runs_without_trainer(recipe) or cfg.in_process
    remote = ray.remote(num_cpus=max(1, cfg.cpus_per_worker) if fits_here else 0)(_fold_task)
    results = ray.get([remote.remote(f.model_dump(mode="json")) for f in folds])
    values = [s[metric] for s in results]
    extra: dict[str, float] = {}
    for m in spec.reported_metrics:  # mean and spread of every figure all folds report
        if m != metric and all(isinstance(s.get(m), float) for s in results):
            extra[m] = statistics.mean(s[m] for s in results)
            extra[f"{m}_std"] = statistics.stdev(s[m] for s in results) if k > 1 else 0.0
    pick = int(np.argmin(values) if mode == "min" else np.argmax(values))
    figures = {
        "strategy": recipe.finetune.strategy,
        "folds": k,
        **extra,
        metric: statistics.mean(values),
        f"{metric}_std": statistics.stdev(values) if k > 1 else 0.0,
        "per_fold": [{"fold": i, metric: s[metric], "run_dir": f.resolved_run_dir()}
                     for i, (s, f) in enumerate(zip(results, folds, strict=True))],
        "trainable_params": results[0].get("trainable_params"),
        "total_params": results[0].get("total_params"),
        "model_dir": results[pick]["model_dir"],  # the best fold's model
    }
    summary = runtime.write_summary(run_dir, "finetune", figures, started)
    log(f"{k}-fold: {metric} {figures[metric]:.4f} ± {figures[f'{metric}_std']:.4f}")
    finish_run(recipe, run_dir, log=log, verb="finetune")
    return summary


def _fold_task(raw: dict[str, Any]) -> dict[str, Any]:
    return finetune(Recipe.model_validate(raw), log=quiet)
