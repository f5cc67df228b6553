"""`lmstack runs list|show|compare`: past runs from the tracking store, or from run directories
(runs/*/summary.json) when tracking is off or the store is empty."""

from __future__ import annotations

import datetime as dt
import glob
import os
from typing import Any

from lmstack import runtime
from lmstack.tracking import mlflow_log
from lmstack.tracking.report import write_comparison

COLUMNS = ("started", "run", "experiment", "task", "verb", "status", "metric", "run_dir")


def _store_has_runs(uri: str) -> bool:
    path = uri.removeprefix("sqlite:///")
    return not uri.startswith("sqlite:///") or os.path.exists(path)


def _headline(metrics: dict[str, Any]) -> str:
    for key in ("val_loss", "summary.val_loss", "summary.best_value"):
        if key in metrics:
            return f"{key.removeprefix('summary.')} {metrics[key]:.4g}"
    return ""


def list_runs(uri: str, root: str = "runs", limit: int = 50) -> list[dict[str, Any]]:
    if _store_has_runs(uri):
        c = mlflow_log.client(uri)
        exps = {e.experiment_id: e.name for e in c.search_experiments()}
        if exps:
            found = c.search_runs(list(exps), order_by=["attributes.start_time DESC"], max_results=limit)
            return [{"started": dt.datetime.fromtimestamp(r.info.start_time / 1000).strftime("%Y-%m-%d %H:%M"),
                     "run": r.info.run_name, "experiment": exps[r.info.experiment_id],
                     "task": r.data.tags.get("task", ""), "verb": r.data.tags.get("verb", ""),
                     "status": r.info.status, "metric": _headline(r.data.metrics),
                     "run_dir": r.data.tags.get(mlflow_log.RUN_DIR_TAG, ""), "run_id": r.info.run_id}
                    for r in found]
    return dir_runs(root)[:limit]


def dir_runs(root: str) -> list[dict[str, Any]]:
    """Runs found as <root>/**/summary.json (newest first), for stores that are off or empty."""
    rows = []
    for path in glob.glob(os.path.join(root, "**", "summary.json"), recursive=True):
        if f"{os.sep}trials{os.sep}" in path or f"{os.sep}mlruns{os.sep}" in path:
            continue
        s = runtime.read_json(path)
        run_dir = os.path.dirname(path)
        rows.append({"started": dt.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d %H:%M"),
                     "run": os.path.basename(run_dir), "experiment": "", "task": "", "verb": s.get("verb", ""),
                     "status": "FINISHED", "metric": _headline(s), "run_dir": run_dir})
    return sorted(rows, key=lambda r: r["started"], reverse=True)


def format_rows(rows: list[dict[str, Any]], columns=COLUMNS) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def run_dir_of(ref: str, uri: str) -> str:
    """A run directory, or an MLflow run id whose lmstack.run_dir tag names one."""
    if os.path.isdir(ref) or runtime.is_uri(ref):
        return ref
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_log.client(uri).get_run(ref)
    except MlflowException:
        raise FileNotFoundError(f"runs: {ref!r} is neither a run directory nor a run id in {uri}") from None
    return run.data.tags[mlflow_log.RUN_DIR_TAG]


def show_run(ref: str, uri: str) -> dict[str, Any]:
    if not os.path.isdir(ref) and _store_has_runs(uri):
        from mlflow.exceptions import MlflowException

        try:
            r = mlflow_log.client(uri).get_run(ref)
            return {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
                    "artifact_uri": r.info.artifact_uri, "tags": {k: v for k, v in r.data.tags.items()
                                                                  if not k.startswith("mlflow.")},
                    "metrics": r.data.metrics, "params": r.data.params}
        except MlflowException:
            pass
    run_dir = run_dir_of(ref, uri)
    summary = runtime.read_json(runtime.join(run_dir, "summary.json"))
    found = mlflow_log.find_run(uri, run_dir) if _store_has_runs(uri) else None
    return {"run_dir": run_dir, "summary": summary, "run_id": found.info.run_id if found else None,
            "report": runtime.join(run_dir, "report.html")}


def compare_runs(refs: list[str], uri: str, out: str) -> str:
    """One comparison page for the runs (directories or run ids)."""
    return write_comparison([run_dir_of(r, uri) for r in refs], out)
