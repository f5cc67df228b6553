"""`lmstack tune`'s recipe side: the search space, its checks, searches and schedulers (no Ray cluster)."""

import pytest
import yaml

from lmstack.config import RecipeError, load_recipe, validate_recipe
from lmstack.tune.space import check_values, to_tune_space
from lmstack.tune.tuner import with_task_metric

BASE = {"name": "t", "data": {"paths": ["x"]}}


def with_tune(tune, **extra):
    return validate_recipe({**BASE, **extra, "tune": tune}, "r.yaml")


def test_space_kinds_and_dotted_keys():
    r = with_tune({"space": {
        "train.lr": {"loguniform": [1e-4, 1e-2]}, "model.n_layer": {"int": [1, 3]},
        "model.dropout": {"uniform": [0.0, 0.2]}, "model.family": {"choice": ["gpt2", "llama"]},
        "train.early_stopping.patience": {"grid": [1, 2]},
    }, "scheduler": "asha", "search": "random", "num_samples": 3})
    space = to_tune_space(r.tune.space, r.tune.search)
    assert space["train.early_stopping.patience"] == {"grid_search": [1, 2]}
    assert space["model.n_layer"].lower == 1 and space["model.n_layer"].upper == 4  # inclusive high
    # Unset, metric and mode are the task's checkpoint metric: val_loss, min for lm; val_macro_f1, max for classify.
    assert r.tune.metric is None and with_task_metric(r).tune.metric == "val_loss"
    assert with_task_metric(r).tune.mode == "min"
    cls = validate_recipe({**BASE, "task": "classify", "classify": {}, "tune": {"space": {"train.lr": {"grid": [1e-3]}}}})
    assert (with_task_metric(cls).tune.metric, with_task_metric(cls).tune.mode) == ("val_macro_f1", "max")


def test_a_metric_the_task_never_reports_is_refused():
    with pytest.raises(RecipeError, match="tune.metric: task 'lm' reports .* not 'val_macro_f1'"):
        with_task_metric(with_tune({"space": {"train.lr": {"grid": [1e-3]}}, "metric": "val_macro_f1"}))


@pytest.mark.parametrize("space, message", [
    ({"train.lrr": {"uniform": [0, 1]}}, "train.lrr: unknown recipe key"),
    ({"modle.n_layer": {"int": [1, 2]}}, "modle.n_layer: unknown recipe key"),
    ({"train": {"choice": [1]}}, "train: is a section"),
    ({"data.block_size": {"grid": [8, 16]}}, "data.block_size: cannot be searched"),
    ({"train.lr": {"uniform": [0.1, 0.2], "choice": [1]}}, "exactly one of"),
    ({"train.lr": {"loguniform": [0, 1]}}, "positive"),
])
def test_bad_space_names_the_key(space, message):
    with pytest.raises(RecipeError, match=message):
        with_tune({"space": space})


def test_values_checked_against_the_recipe():
    r = with_tune({"space": {"train.lr": {"grid": [1e-3, 1e-5]}}}, train={"min_lr": 1e-4})
    with pytest.raises(RecipeError, match=r"train.lr=1e-05.*min_lr"):
        check_values(r)
    with pytest.raises(RecipeError, match="grid search needs grid or choice"):
        check_values(with_tune({"space": {"train.lr": {"uniform": [1e-3, 1e-2]}}, "search": "grid"}))


@pytest.mark.parametrize("search", ["random", "grid", "optuna"])
@pytest.mark.parametrize("scheduler", ["none", "asha", "median", "pbt"])
def test_every_search_and_scheduler_builds(search, scheduler):
    from lmstack.tune.search import make_scheduler, make_search_alg

    r = with_tune({"space": {"train.lr": {"choice": [1e-3, 3e-3]}, "model.n_layer": {"int": [1, 2]}},
                   "search": search, "scheduler": scheduler}) if search != "grid" else with_tune(
        {"space": {"train.lr": {"grid": [1e-3, 3e-3]}}, "search": search, "scheduler": scheduler})
    r = with_task_metric(r)
    check_values(r)
    assert make_search_alg(r, max_concurrent=2) is not None
    sched = make_scheduler(r)
    assert type(sched).__name__ == {"none": "FIFOScheduler", "asha": "AsyncHyperBandScheduler",
                                    "median": "MedianStoppingRule", "pbt": "PopulationBasedTraining"}[scheduler]


def test_dumped_recipe_loads_back(tmp_path):
    from lmstack.config import dump_recipe

    r = with_tune({"space": {"train.lr": {"loguniform": [1e-4, 1e-2]}, "model.n_layer": {"int": [1, 3]}}})
    (tmp_path / "r.yaml").write_text(dump_recipe(r))
    assert yaml.safe_load(dump_recipe(r))["tune"]["space"]["model.n_layer"] == {"int": [1, 3]}
    assert load_recipe(tmp_path / "r.yaml") == r




def test_cross_validation_needs_folds_and_no_scheduler():
    with pytest.raises(RecipeError, match="data.folds"):
        with_tune({"space": {"train.lr": {"grid": [1e-3]}}, "cross_validation": True})
    with pytest.raises(RecipeError, match="scheduler must be none"):
        with_tune({"space": {"train.lr": {"grid": [1e-3]}}, "cross_validation": True, "scheduler": "asha"},
                  data={"paths": ["x"], "folds": 3})
