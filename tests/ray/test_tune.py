"""`lmstack tune`: the recipe's tune section, and searches on the session's local Ray cluster."""

import csv
import json
import os

import pytest
import yaml

from conftest import make_corpus, tiny_recipe
from lmstack.config import RecipeError, load_recipe, validate_recipe
from lmstack.tune.space import check_values, to_tune_space

quiet = lambda *_: None  # noqa: E731
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
    assert r.tune.metric == "val_loss" and r.tune.mode == "min"


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


# --- searches on the local Ray cluster -------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_cluster):
    from lmstack.data.prepare import prepare

    tmp = tmp_path_factory.mktemp("tune")
    recipe = tiny_recipe(tmp, make_corpus(tmp / "corpus", docs=80), num_workers=1)
    prepare(recipe, log=quiet)
    return recipe


def search_recipe(prepared, run_dir, **tune):
    raw = prepared.model_dump(mode="json")
    raw["run_dir"] = str(run_dir)
    raw["data"]["output"] = prepared.data_dir()
    raw["train"].update(max_steps=20, eval_every=5, log_every=5, min_lr=1e-6, warmup_steps=0)
    raw["tune"] = {"metric": "val_loss", "mode": "min", "max_concurrent": 2, **tune}
    return validate_recipe(raw, "test")


def starts(run_dir):
    root = os.path.join(run_dir, "trials")
    return {t: len(open(os.path.join(root, t, "starts.jsonl")).readlines()) for t in sorted(os.listdir(root))}


@pytest.fixture(scope="module")
def asha_search(prepared, tmp_path_factory):
    from lmstack.tune.tuner import tune_recipe

    run_dir = tmp_path_factory.mktemp("asha") / "run"
    # The good rate first: ASHA keeps the first trials to reach a rung, then stops worse ones.
    recipe = search_recipe(prepared, run_dir, search="grid", scheduler="asha", grace_period=5,
                           space={"train.lr": {"grid": [1e-2, 1e-5, 2e-5, 3e-5]}})
    return recipe, tune_recipe(recipe, log=quiet)


def test_asha_grid_finds_the_better_lr_and_stops_trials_early(asha_search):
    recipe, summary = asha_search
    assert summary["trials"] == 4 and summary["best_params"] == {"train.lr": 1e-2}
    assert summary["by_status"]["stopped early"] >= 1 and summary["by_status"]["error"] == 0
    rows = list(csv.DictReader(open(summary["trials_csv"])))
    assert {r["train.lr"] for r in rows} == {"0.01", "1e-05", "2e-05", "3e-05"}
    assert min(int(r["step"]) for r in rows) < 20
    for png in summary["plots"]:
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # Only the best trial is exported.
    assert os.path.exists(os.path.join(summary["model_dir"], "model.safetensors"))
    assert not any(os.path.exists(os.path.join(recipe.run_dir, "trials", t, "model")) for t in starts(recipe.run_dir))


def test_finished_search_resumes_without_rerunning(asha_search):
    from lmstack.tune.tuner import tune_recipe

    recipe, first = asha_search
    before = starts(recipe.run_dir)
    again = tune_recipe(recipe, log=quiet)
    assert starts(recipe.run_dir) == before == {t: 1 for t in before}
    assert again["best_trial"] == first["best_trial"] and again["best_value"] == first["best_value"]


def test_best_recipe_trains_unchanged(asha_search):
    from lmstack.train.trainer import train

    _, summary = asha_search
    best = load_recipe(summary["best_recipe"])
    assert best.train.lr == 1e-2 and best.tune is None
    assert yaml.safe_load(open(summary["best_recipe"]))["train"]["lr"] == 1e-2
    result = train(best, log=quiet)
    assert result["steps"] == 20 and result["val_loss"] <= summary["best_value"] * 1.05
    assert json.load(open(os.path.join(best.run_dir, "summary.json")))["verb"] == "train"


def test_interrupted_search_resumes_and_reruns_nothing_finished(prepared, tmp_path):
    """Ctrl-C a `lmstack tune` process mid-search, then run it again on the same run directory."""
    import signal
    import subprocess
    import sys
    import time

    import ray

    from lmstack.config import dump_recipe
    from lmstack.tune.tuner import tune_recipe

    recipe = search_recipe(prepared, tmp_path / "run", search="grid", scheduler="none", max_concurrent=1,
                           space={"train.lr": {"grid": [1e-2, 3e-3]}})
    path = tmp_path / "search.yaml"
    path.write_text(dump_recipe(recipe))
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0", "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "lmstack", "tune", str(path)], env=env, stdout=log, stderr=log)
    tune_dir = os.path.join(recipe.run_dir, "tune")

    def finished_trials():
        done = 0
        for d in os.listdir(tune_dir) if os.path.isdir(tune_dir) else []:
            result = os.path.join(tune_dir, d, "result.json")
            if os.path.exists(result) and '"done": true' in open(result).read():
                done += 1
        return done

    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        trials = os.path.join(recipe.run_dir, "trials")
        if finished_trials() == 1 and os.path.isdir(trials) and len(os.listdir(trials)) == 2:
            break
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=300) == 0
    assert "search interrupted" in open(tmp_path / "first.log").read()

    summary = tune_recipe(recipe, log=quiet)
    counts = starts(recipe.run_dir)
    assert sorted(counts.values()) == [1, 2]  # the finished trial ran once, the interrupted one resumed
    assert summary["trials"] == 2 and summary["by_status"]["completed"] == 2
    assert summary["best_params"] == {"train.lr": 1e-2}


def test_cross_validation_scores_each_trial_by_the_mean_over_folds(tmp_path, ray_cluster):
    from lmstack.tune.tuner import tune_recipe

    base = tiny_recipe(tmp_path, make_corpus(tmp_path / "corpus", docs=80), num_workers=1)
    raw = base.model_dump(mode="json")
    raw["data"]["folds"] = 2
    raw["train"].update(max_steps=6, eval_every=3, log_every=3, min_lr=1e-6, warmup_steps=0)
    # One trial: what is under test is how a trial scores its folds (the search around it is tested above).
    raw["tune"] = {"search": "grid", "cross_validation": True, "space": {"train.lr": {"grid": [1e-2]}}}
    recipe = validate_recipe(raw, "test")
    summary = tune_recipe(recipe, log=quiet)
    assert summary["trials"] == 1 and summary["by_status"]["completed"] == 1

    # Each trial trained both folds; its score is the mean of the folds' best val_loss.
    for row in csv.DictReader(open(summary["trials_csv"])):
        folds = [json.load(open(os.path.join(recipe.run_dir, "trials", row["trial_id"], f"fold{i}",
                                             "fold_result.json"))) for i in range(2)]
        assert float(row["val_loss"]) == pytest.approx(sum(f["val_loss"] for f in folds) / 2)
        assert [f["fold"] for f in folds] == [0, 1] and folds[0]["val_loss"] != folds[1]["val_loss"]
    # The two folds were prepared with complementary validation sets and one shared tokenizer.
    manifests = [json.load(open(os.path.join(recipe.data_dir(), f"fold{i}", "manifest.json"))) for i in range(2)]
    assert manifests[0]["tokenizer"]["vocab_size"] == manifests[1]["tokenizer"]["vocab_size"]
    assert manifests[0]["tokens"]["val"] + manifests[1]["tokens"]["val"] == pytest.approx(
        manifests[0]["tokens"]["train"] + manifests[0]["tokens"]["val"], rel=0.01)
    assert load_recipe(summary["best_recipe"]).data.output.endswith("fold0")


def test_cross_validation_needs_folds_and_no_scheduler():
    with pytest.raises(RecipeError, match="data.folds"):
        with_tune({"space": {"train.lr": {"grid": [1e-3]}}, "cross_validation": True})
    with pytest.raises(RecipeError, match="scheduler must be none"):
        with_tune({"space": {"train.lr": {"grid": [1e-3]}}, "cross_validation": True, "scheduler": "asha"},
                  data={"paths": ["x"], "folds": 3})
