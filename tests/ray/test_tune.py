"""`lmstack tune`: searches on the session's local Ray cluster (the recipe side: tests/unit/test_tune_space.py)."""

import csv
import json
import os

import pytest
import yaml

from conftest import make_corpus, tiny_recipe
from lmstack.config import load_recipe, validate_recipe

pytestmark = pytest.mark.usefixtures("ray_cluster")
quiet = lambda *_: None  # noqa: E731


# --- searches on the local Ray cluster -------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_cluster):
    from lmstack.tasks import get_spec

    tmp = tmp_path_factory.mktemp("tune")
    recipe = tiny_recipe(tmp, make_corpus(tmp / "corpus", docs=80), num_workers=1)
    get_spec("lm").prepare(recipe, log=quiet)
    return recipe


def search_recipe(prepared, run_dir, in_process=False, **tune):
    raw = prepared.model_dump(mode="json")
    raw["run_dir"] = str(run_dir)
    raw["data"]["output"] = prepared.data_dir()
    raw["train"].update(max_steps=20, eval_every=5, log_every=5, min_lr=1e-6, warmup_steps=0, in_process=in_process)
    raw["tune"] = {"metric": "val_loss", "mode": "min", "max_concurrent": 2, **tune}
    raw["tracking"] = {"enabled": True}  # a search is a parent MLflow run with a child per trial
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


def test_search_writes_its_report_and_mlflow_parent_and_trial_runs(asha_search):
    from lmstack.tracking.mlflow_log import client, recipe_uri

    recipe, summary = asha_search
    root = recipe.resolved_run_dir()
    page = open(os.path.join(root, "report.html"), encoding="utf-8").read()
    assert "<h2>Search</h2>" in page and page.count("data:image/png;base64,") >= 2  # the search's plots
    c = client(recipe_uri(recipe, root))
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
    parent = next(r for r in runs if r.data.tags.get("verb") == "tune")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == summary["trials"] == 4
    assert {r.data.params["search.train.lr"] for r in trials} == {"0.01", "1e-05", "2e-05", "3e-05"}
    assert all(c.get_metric_history(r.info.run_id, "val_loss") for r in trials)


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

    # In process: each trial's loop runs in the trial's own process (the TorchTrainer-in-a-trial path is the
    # ASHA search's above); a resumed trial continues from its own kept checkpoint.
    recipe = search_recipe(prepared, tmp_path / "run", search="grid", scheduler="none", max_concurrent=1,
                           space={"train.lr": {"grid": [1e-2, 3e-3]}}, in_process=True)
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
    raw["train"].update(max_steps=6, eval_every=3, log_every=3, min_lr=1e-6, warmup_steps=0, in_process=True)
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
