"""MLflow tracking and the registry on a local SQLite store: a finished run's params, metrics per step,
tags and artifacts; register -> promote -> models:/NAME@ALIAS resolves to the promoted export;
`lmstack runs`; the MLflow UI answers a run's page over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from builders import free_port, make_finished_run
from lmstack.cli import main
from lmstack.config import validate_recipe
from lmstack.tracking.finish import finish_run
from lmstack.tracking.mlflow_log import client, recipe_uri, store_uri
from lmstack.tracking.registry import resolve


def recipe_of(run, **tracking):
    raw = json.loads((run / "model" / "lmstack_model.json").read_text())["recipe"]
    raw["tracking"] = {**raw["tracking"], **tracking}
    return validate_recipe(raw, "test")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Two finished runs of one recipe, logged (report.html first) to one store."""
    root = tmp_path_factory.mktemp("tracked")
    runs = [make_finished_run(root, "first", seed=0), make_finished_run(root, "second", seed=1)]
    uri = store_uri(str(root / "store"))
    ids = [finish_run(recipe_of(r, uri=uri, experiment="tiny"), str(r), verb="train", report=i == 0)["mlflow_run_id"]
           for i, r in enumerate(runs)]  # one report.html is enough to see it uploaded
    return root, runs, uri, ids


def test_a_run_logs_params_metrics_per_step_tags_and_artifacts(tracked, tmp_path):
    _, runs, uri, ids = tracked
    c = client(uri)
    run = c.get_run(ids[0])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.max_steps"] == "20" and run.data.params["model.n_layer"] == "4"
    assert "tracking.uri" not in run.data.params  # where it is logged is not a parameter of the run
    assert [m.step for m in c.get_metric_history(ids[0], "train_loss")] == [5, 10, 15, 20]
    assert [(m.step, round(m.value, 4)) for m in c.get_metric_history(ids[0], "val_loss")] == [(10, 3.2), (20, 2.3)]
    tags = run.data.tags
    assert tags["task"] == "lm" and tags["verb"] == "train" and tags["data_manifest_hash"] == f"p{0:015d}"
    assert len(tags["git_commit"]) >= 12 and tags["lmstack.run_dir"] == str(runs[0])
    names = {f.path for f in c.list_artifacts(ids[0])}
    assert {"summary.json", "report.html", "metrics.jsonl", "model"} <= names
    # The logged model is a complete export: it loads with the task's own loader.
    import mlflow.artifacts

    from lmstack.tasks import get_spec

    local = mlflow.artifacts.download_artifacts(run_id=ids[0], artifact_path="model", dst_path=str(tmp_path),
                                                tracking_uri=uri)
    model = get_spec("lm").load_exported(local)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_tracking_off_and_the_default_store(tmp_path):
    run = make_finished_run(tmp_path, "quiet")
    assert recipe_uri(recipe_of(run, enabled=False), str(run)) is None
    assert "mlflow_run_id" not in finish_run(recipe_of(run, enabled=False), str(run), report=False)
    assert not (tmp_path / "mlruns").exists()
    # Default: <runs root>/mlruns (the directory above the run directory), unless MLFLOW_TRACKING_URI says.
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert recipe_uri(recipe_of(run), str(run)) == f"sqlite:///{tmp_path}/mlruns/mlflow.db"


def test_register_promote_and_resolve_by_alias(tracked, capsys):
    _, runs, uri, _ = tracked
    for run in runs:
        assert main(["models", "register", str(run), "--name", "tiny-lm", "--tracking-uri", uri]) == 0
    assert main(["models", "promote", "tiny-lm", "1", "--tracking-uri", uri]) == 0
    first, name, version = resolve("models:/tiny-lm@production", uri)
    assert (name, version) == ("tiny-lm", "1") and os.path.isfile(os.path.join(first, "lmstack_model.json"))
    assert main(["models", "promote", "tiny-lm", "2", "--tracking-uri", uri]) == 0
    second, _, version = resolve("models:/tiny-lm@production", uri)
    assert version == "2" and second != first
    capsys.readouterr()
    assert main(["models", "show", "tiny-lm", "--tracking-uri", uri]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["aliases"] == {"production": 2}
    assert [v["data_manifest_hash"] for v in shown["versions"]] == [f"p{0:015d}", f"p{1:015d}"]
    # A server following models:/tiny-lm@production sees the promotion as a move to version 2 (then swaps).
    from lmstack.tracking.registry import moved

    assert moved({"tiny-lm": ("models:/tiny-lm@production", "1")}, uri) == [("tiny-lm", second, "2")]
    assert moved({"tiny-lm": ("models:/tiny-lm@production", "2")}, uri) == []
    assert main(["models", "promote", "tiny-lm", "9", "--tracking-uri", uri]) == 2  # one line, no traceback
    with pytest.raises(FileNotFoundError):
        resolve("models:/tiny-lm@staging", uri)


def test_runs_list_and_compare(tracked, tmp_path, capsys):
    _, runs, uri, ids = tracked
    assert main(["runs", "list", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["started", "run"] and {"first", "second"} <= {line.split()[2] for line in out[1:]}
    page = tmp_path / "cmp.html"
    assert main(["runs", "compare", ids[0], str(runs[1]), "-o", str(page), "--tracking-uri", uri]) == 0
    assert "Comparison of 2 runs" in page.read_text()


def test_mlflow_ui_answers_a_runs_page_over_http(tracked):
    _, _, uri, ids = tracked
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmstack", "ui", "mlflow", "--tracking-uri", uri, "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the server's workers stop with it
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, body = time.time() + 180, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/ajax-api/2.0/mlflow/runs/get?run_id={ids[0]}", timeout=10) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(1)
        assert body is not None, f"the MLflow UI did not answer (exit code {proc.poll()})"
        assert body["run"]["info"]["run_id"] == ids[0]
        with urllib.request.urlopen(f"{base}/#/experiments/{body['run']['info']['experiment_id']}/runs/{ids[0]}",
                                    timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started, by its leader's PID
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_the_tracking_section_is_checked_with_the_recipe():
    from lmstack.config import RecipeError

    base = {"name": "t", "data": {"paths": ["x.txt"]}}
    assert validate_recipe({**base, "tracking": False}, "r").tracking.enabled is False
    assert validate_recipe({**base, "tracking": {"uri": "http://mlflow:5000"}}, "r").tracking.uri
    for bad, msg in (({"uri": "ftp://x"}, "tracking.uri: Value error, unknown tracking store scheme"),
                     ({"url": "x"}, "tracking.url: unknown key")):
        with pytest.raises(RecipeError, match=msg):
            validate_recipe({**base, "tracking": bad}, "r")
    # Where a run is recorded is not part of what it computes: the recipe hash ignores the section.
    assert validate_recipe({**base, "tracking": False}, "r").fingerprint() == validate_recipe(base, "r").fingerprint()
