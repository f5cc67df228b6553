"""`lmstack tune`: build or restore the Tuner, run the search, export the best trial."""

from __future__ import annotations

import time
from typing import Any

from lmstack import runtime
from lmstack.artifacts import storage_path
from lmstack.config import Recipe, RecipeError
from lmstack.tasks import get_spec
from lmstack.train.prepared import ensure_prepared
from lmstack.tune import report
from lmstack.tune.search import make_scheduler, make_search_alg
from lmstack.tune.space import check_values, to_tune_space
from lmstack.tune.trial import make_trainable

EXPERIMENT = "tune"
# The trial actor only waits on its TorchTrainer, whose workers hold the real resources;
# Tune refuses {"CPU": 0} alone (RAY_NOTES.md).
TRIAL_SHELL_RESOURCES = {"CPU": 0, "memory": 2**20}


def default_concurrency(recipe: Recipe) -> int:
    """As many trials as the cluster's CPUs (or GPUs) hold at the recipe's workers per trial."""
    import ray

    cfg = recipe.train
    total = ray.cluster_resources()
    if cfg.use_gpu:
        return max(1, int(total.get("GPU", 0) // cfg.num_workers))
    return max(1, int(total.get("CPU", 1) // (cfg.num_workers * cfg.cpus_per_worker)))


def build_tuner(recipe: Recipe, info: dict[str, Any], root: str, log=print,
                fold_infos: list[dict[str, Any]] | None = None):
    """A new Tuner, or the one saved under <run_dir>/tune when the search was interrupted."""
    from ray import tune

    cfg = recipe.tune
    concurrency = cfg.max_concurrent or default_concurrency(recipe)
    base = recipe.model_dump(mode="json")
    base["tune"] = None
    base["data"]["output"] = recipe.data_dir() if runtime.is_uri(recipe.data_dir()) else _abs(recipe.data_dir())
    trainable = make_trainable(base, info, root, list(cfg.space), fold_infos, cfg.metric, cfg.mode)
    trainable = tune.with_resources(trainable, TRIAL_SHELL_RESOURCES)
    path = runtime.join(root, EXPERIMENT)
    if tune.Tuner.can_restore(path):
        log(f"resuming the search in {path}: finished trials are kept, unfinished ones continue")
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space=to_tune_space(cfg.space, cfg.search),
        tune_config=tune.TuneConfig(
            metric=cfg.metric,
            mode=cfg.mode,
            search_alg=make_search_alg(recipe, concurrency),
            scheduler=make_scheduler(recipe),
            num_samples=cfg.num_samples,
            reuse_actors=False,  # a trial actor owns one TorchTrainer run
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=root,
            # Tune's checkpoints are tiny pointers to Train checkpoints: a trial needs its latest; PBT
            # clones a donor's, which may be a few reports old.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if cfg.scheduler == "pbt" else 1),
        ),
    )


def _abs(path: str) -> str:
    import os

    return os.path.abspath(path)


def with_task_metric(recipe: Recipe) -> Recipe:
    """tune.metric/mode filled from the task when not given; a metric the task never reports is refused
    (every trial would end unscored)."""
    spec = get_spec(recipe.task)
    cfg = recipe.tune
    metric = cfg.metric or spec.select_metric[0]
    if metric not in spec.reported_metrics:
        raise RecipeError(f"{recipe.name}: tune.metric: task {recipe.task!r} reports {list(spec.reported_metrics)}, "
                          f"not {metric!r}")
    default_mode = spec.select_metric[1] if metric == spec.select_metric[0] else "min"
    tune = cfg.model_copy(update={"metric": metric, "mode": cfg.mode or default_mode})
    return recipe.model_copy(update={"tune": tune})


def tune_recipe(recipe: Recipe, log=print) -> dict[str, Any]:
    """Run (or resume) the recipe's search; write the trials table, plots, best recipe and model."""
    if recipe.tune is None:
        raise RecipeError(f"{recipe.name}: the recipe has no tune section")
    recipe = with_task_metric(recipe)
    check_values(recipe)
    started = time.time()
    root = storage_path(recipe)
    runtime.makedirs(root)
    runtime.connect()
    fold_infos = None
    if recipe.tune.cross_validation:
        from lmstack.tune.cv import prepare_folds  # imports Ray Train: only for cross-validated searches

        fold_infos = prepare_folds(recipe, log)
        info = fold_infos[0]
    else:
        info = ensure_prepared(recipe, get_spec(recipe.task), log=log)
    results = build_tuner(recipe, info, root, log, fold_infos).fit()
    unfinished = _unfinished(results)
    if unfinished:
        # Ctrl-C (SIGINT) makes Tune save its state and return early; results would be partial.
        log(f"search interrupted with {unfinished} trial(s) unfinished; run `lmstack tune` on {root} to resume")
        return {"verb": "tune", "interrupted": True, "unfinished": unfinished, "run_dir": root}
    return report.write_results(recipe, results, info, root, started, log)


def _unfinished(results) -> int:
    """Trials that neither errored nor ended: Tune marks a trial's last result done when it ends
    (its run finished or a scheduler stopped it); an interrupted trial's last result is not done."""
    return sum(r.error is None and not (r.metrics or {}).get("done") for r in results)
