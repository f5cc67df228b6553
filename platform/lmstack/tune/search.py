"""Ray Tune's search algorithms and trial schedulers, chosen by the recipe's `tune` section."""

from __future__ import annotations

from typing import Any

from lmstack.config import Recipe

# Trials report Ray Train's `step`, so schedulers count optimizer steps, not Tune iterations:
# a restored trial resumes its step count, while training_iteration would restart from 1.
TIME_ATTR = "step"


def make_search_alg(recipe: Recipe, max_concurrent: int) -> Any:
    """Optuna TPE, or Tune's BasicVariantGenerator (random sampling and grid expansion)."""
    cfg = recipe.tune
    if cfg.search == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=cfg.seed))
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune ignores max_concurrent_trials for a generator passed in: it must carry the limit.
    return BasicVariantGenerator(max_concurrent=max_concurrent, random_state=cfg.seed)


def pbt_mutations(recipe: Recipe) -> dict[str, Any]:
    """PBT perturbs lists by shifting along them and scales continuous domains; grids become lists."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, spec in recipe.tune.space.items():
        if spec.choice is not None or spec.grid is not None:
            out[key] = list(spec.choice if spec.choice is not None else spec.grid)
        elif spec.int_ is not None:
            out[key] = list(range(spec.int_[0], spec.int_[1] + 1))
        elif spec.uniform is not None:
            out[key] = tune.uniform(*spec.uniform)
        else:
            out[key] = tune.loguniform(*spec.loguniform)
    return out


def make_scheduler(recipe: Recipe) -> Any:
    cfg, train = recipe.tune, recipe.train
    grace = cfg.grace_period or train.eval_every
    if cfg.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr=TIME_ATTR, max_t=train.max_steps, grace_period=grace,
                             reduction_factor=cfg.reduction_factor)
    if cfg.scheduler == "median":
        from ray.tune.schedulers import MedianStoppingRule

        # min_time_slice: never pause a trial to time-share with pending ones (the rule's default);
        # each pause costs a TorchTrainer restart.
        return MedianStoppingRule(time_attr=TIME_ATTR, grace_period=grace, min_samples_required=2,
                                  min_time_slice=train.max_steps)
    if cfg.scheduler == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        # Only continuous/categorical keys can mutate; int ranges resample from the same range.
        return PopulationBasedTraining(
            time_attr=TIME_ATTR,
            perturbation_interval=cfg.perturbation_interval or train.eval_every,
            hyperparam_mutations=pbt_mutations(recipe),
            quantile_fraction=cfg.quantile_fraction,
            synch=False,
        )
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()
