"""MLflow tracking from the driver, after a run reports: the run's metrics.jsonl, summary.json,
report.html and exported model already hold everything, so logging reads them (rank 0's file) and no
worker talks to MLflow. One MLflow run per lmstack run; a search is a parent run with a child per trial.

Store: the recipe's tracking.uri, else MLFLOW_TRACKING_URI, else SQLite under <runs root>/mlruns
(MLflow 3 refuses new plain-file stores), artifacts beside it."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator
from typing import Any

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.tasks.report import RunRecord
from lmstack.tracking.lineage import code_version, load_run, task_of

DB = "mlflow.db"
RUN_DIR_TAG = "lmstack.run_dir"
MAX_PARAM = 6000  # MLflow's limit on a parameter value's length


def quiet_mlflow() -> None:
    """MLflow and alembic log INFO lines (database migrations, "run finished" links) on every call."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def store_uri(location: str) -> str:
    """A directory becomes the SQLite store inside it; URIs pass through."""
    if "://" in location:
        return location
    path = os.path.abspath(location)
    os.makedirs(path, exist_ok=True)
    return f"sqlite:///{os.path.join(path, DB)}"


def default_location(run_dir: str) -> str:
    """<runs root>/mlruns: the directory above the run directory (runs/ for runs/<name>)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or os.path.join(os.path.dirname(os.path.abspath(run_dir)), "mlruns")


def recipe_uri(recipe: Recipe, run_dir: str) -> str | None:
    """The store this recipe's runs go to, or None when tracking is off."""
    cfg = recipe.tracking
    if not cfg.enabled:
        return None
    return store_uri(cfg.uri or default_location(run_dir))


def client(uri: str):
    import mlflow

    quiet_mlflow()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(c, uri: str, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the current directory
        artifacts = "file://" + os.path.join(os.path.dirname(uri.removeprefix("sqlite:///")), "artifacts", name)
    return c.create_experiment(name, artifact_location=artifacts)


# -- what goes in ----------------------------------------------------------------------------------
def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Dotted keys of a nested recipe dump, with string values (MLflow params are strings)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        text = json.dumps(obj) if isinstance(obj, (list, bool)) or obj is None else str(obj)
        yield prefix, text[:MAX_PARAM]


def metric_name(key: str) -> str:
    """MLflow allows letters, digits and _-. /: e.g. val_hr@10 -> val_hr_at_10."""
    return re.sub(r"[^\w\-. /]", "_", key.replace("@", "_at_"))


def step_metrics(rows: list[dict[str, Any]]) -> list[Any]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    out = []
    for row in rows:
        step = int(row.get("step", 0))
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(Metric(metric_name(key), float(value), now, step))
    return out


def tags(run: RunRecord, verb: str | None) -> dict[str, str]:
    recipe = run.recipe or {}
    info = run.info or {}
    found = {
        "task": task_of(run),
        "verb": verb or run.summary.get("verb"),
        "strategy": run.summary.get("strategy") or (recipe.get("finetune") or {}).get("strategy"),
        "recipe": recipe.get("name"),
        "recipe_hash": run.lineage.get("recipe_hash"),
        "data_manifest": run.lineage.get("data_manifest"),
        "data_manifest_hash": info.get("prepare_hash"),
        "git_commit": code_version(),
        "mlflow.source.git.commit": code_version().removesuffix("+dirty"),
        RUN_DIR_TAG: os.path.abspath(run.run_dir) if not runtime.is_uri(run.run_dir) else run.run_dir,
    }
    return {k: str(v) for k, v in found.items() if v}


# -- logging ---------------------------------------------------------------------------------------
def log_run(uri: str, run_dir: str, recipe: dict[str, Any] | None = None, experiment: str | None = None,
            parent_run_id: str | None = None, log_model: bool = True, verb: str | None = None,
            extra_params: dict[str, Any] | None = None) -> str:
    """One finished run directory as an MLflow run (params, metrics per step, tags, artifacts); its id."""
    from mlflow.entities import Metric, Param

    run = load_run(run_dir)
    recipe = recipe or run.recipe or {}
    c = client(uri)
    name = experiment or recipe.get("name") or os.path.basename(run_dir.rstrip("/"))
    exp = experiment_id(c, uri, name)
    run_tags = tags(run, verb)
    if parent_run_id:
        run_tags["mlflow.parentRunId"] = parent_run_id
    mlrun = c.create_run(exp, run_name=os.path.basename(run_dir.rstrip("/")), tags=run_tags)
    rid = mlrun.info.run_id
    try:
        params = dict(flatten({k: v for k, v in recipe.items() if k != "tracking"}))
        params.update({k: str(v)[:MAX_PARAM] for k, v in (extra_params or {}).items()})
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit for params
            c.log_batch(rid, params=items[i:i + 100])
        now = int(time.time() * 1000)
        metrics = step_metrics(run.rows) + [
            Metric(metric_name(f"summary.{k}"), float(v), now, 0) for k, v in run.summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for i in range(0, len(metrics), 1000):
            c.log_batch(rid, metrics=metrics[i:i + 1000])
        for name in ("summary.json", "report.html", "metrics.jsonl"):
            path = runtime.join(run_dir, name)
            if runtime.exists(path) and not runtime.is_uri(path):
                c.log_artifact(rid, path)
        if log_model and run.model_dir and not runtime.is_uri(run.model_dir):
            c.log_artifacts(rid, run.model_dir, "model")
        c.set_terminated(rid, "FINISHED")
    except BaseException:
        c.set_terminated(rid, "FAILED")
        raise
    return rid


def open_parent(uri: str, experiment: str, run_name: str, run_tags: dict[str, str],
                params: dict[str, Any]) -> str:
    """A parent run (a search, a k-fold run) that child runs name with parent_run_id."""
    from mlflow.entities import Param

    c = client(uri)
    rid = c.create_run(experiment_id(c, uri, experiment), run_name=run_name, tags=run_tags).info.run_id
    items = [Param(k, str(v)[:MAX_PARAM]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        c.log_batch(rid, params=items[i:i + 100])
    return rid


def find_run(uri: str, run_dir: str):
    """The latest MLflow run logged for run_dir, or None."""
    c = client(uri)
    exps = [e.experiment_id for e in c.search_experiments()]
    if not exps:
        return None
    path = os.path.abspath(run_dir) if not runtime.is_uri(run_dir) else run_dir
    found = c.search_runs(exps, filter_string=f"tags.`{RUN_DIR_TAG}` = '{path}'",
                          order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None
