"""The end of every run: report.html in the run directory, then the MLflow run (when tracking is on).

Called by the stages on the driver after summary.json is written. A failure here is reported in one
line and does not fail the run: the model and its summary are already published."""

from __future__ import annotations

from typing import Any

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.tracking import mlflow_log
from lmstack.tracking.report import write_report


def _guard(what: str, log, fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the run itself succeeded; say what was not recorded
        log(f"warning: {what} failed: {type(err).__name__}: {err}")
        return None


def finish_run(recipe: Recipe, run_dir: str, log=print, verb: str | None = None, report: bool = True,
               parent_run_id: str | None = None) -> dict[str, Any]:
    """report.html, then the MLflow run; returns {"report": path, "mlflow_run_id": id} (what was done)."""
    done: dict[str, Any] = {}
    if report:
        done["report"] = _guard("report.html", log, write_report, run_dir)
    uri = mlflow_log.recipe_uri(recipe, run_dir)
    if uri is not None:
        done["mlflow_run_id"] = _guard(
            "MLflow logging", log, mlflow_log.log_run, uri, run_dir, recipe.model_dump(mode="json"),
            experiment=recipe.tracking.experiment, parent_run_id=parent_run_id,
            log_model=recipe.tracking.log_model, verb=verb)
        done["mlflow_uri"] = uri
    done = {k: v for k, v in done.items() if v}
    if done.get("report") or done.get("mlflow_run_id"):
        log(" · ".join(x for x in (done.get("report") and f"report {done['report']}", done.get("mlflow_run_id") and
                                   f"MLflow run {done['mlflow_run_id']} (lmstack ui mlflow --tracking-uri {uri})") if x))
    return done


def finish_search(recipe: Recipe, root: str, trial_rows: list[dict[str, Any]], log=print) -> dict[str, Any]:
    """A search: report.html of the search, a parent MLflow run (the search's summary and best model) and
    one child per trial (its params and metrics per step)."""
    done = finish_run(recipe, root, log=log, verb="tune")
    parent = done.get("mlflow_run_id")
    if parent is None:
        return done
    uri = done["mlflow_uri"]
    keys = list(recipe.tune.space) if recipe.tune else []
    for row in trial_rows:
        trial_dir = runtime.join(root, "trials", str(row["trial_id"]))
        if not runtime.exists(runtime.join(trial_dir, "metrics.jsonl")):
            continue
        _ensure_summary(trial_dir, row, keys)
        _guard(f"MLflow logging of trial {row['trial_id']}", log, mlflow_log.log_run, uri, trial_dir,
               recipe.model_dump(mode="json"), experiment=recipe.tracking.experiment, parent_run_id=parent,
               log_model=False, verb="trial", extra_params={f"search.{k}": row.get(k) for k in keys})
    return done


def _ensure_summary(trial_dir: str, row: dict[str, Any], keys: list[str]) -> None:
    """A trial directory has metrics.jsonl but no summary.json (the trial is not exported): write one
    from the search's row so the trial reads like any run."""
    path = runtime.join(trial_dir, "summary.json")
    if not runtime.exists(path):
        runtime.write_json(path, {"verb": "trial", **{k: v for k, v in row.items()
                                                      if not k.startswith("_") and k != "checkpoint"},
                                  "params": {k: row.get(k) for k in keys}})


def finish_evaluate(recipe: Recipe, run_dir: str, log=print) -> dict[str, Any]:
    """`lmstack evaluate RECIPE`: the scores as an MLflow run (no report: nothing was trained)."""
    return finish_run(recipe, run_dir, log=log, verb="evaluate", report=False)

