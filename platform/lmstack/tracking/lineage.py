"""Where a run came from: the code version and the files a run directory holds, read the same way by
the report, MLflow logging and `lmstack runs`."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from typing import Any

from lmstack import runtime
from lmstack.artifacts import MODEL_MANIFEST
from lmstack.tasks.report import RunRecord


@functools.cache
def code_version() -> str:
    """The git commit of lmstack's source (with "+dirty" when it has uncommitted changes), or the
    package version when it is not a git checkout (an installed wheel, a Ray job's working_dir copy)."""
    import lmstack

    here = os.path.dirname(os.path.abspath(lmstack.__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "--", here],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"lmstack {lmstack.__version__}"


def read_rows(run_dir: str) -> list[dict[str, Any]]:
    path = runtime.join(run_dir, "metrics.jsonl")
    if not runtime.exists(path):
        return []
    return [json.loads(line) for line in runtime.read_text(path).splitlines() if line.strip()]


def load_run(run_dir: str) -> RunRecord:
    """A finished run's summary, metrics rows, model lineage and data manifest. A directory without
    summary.json is not a run (one-line error)."""
    summary_path = runtime.join(run_dir, "summary.json")
    if not runtime.exists(summary_path):
        raise FileNotFoundError(f"{run_dir}: no summary.json (not a finished run directory)")
    summary = runtime.read_json(summary_path)
    model_dir = summary.get("model_dir")
    lineage: dict[str, Any] = {}
    if model_dir and runtime.exists(runtime.join(model_dir, MODEL_MANIFEST)):
        lineage = runtime.read_json(runtime.join(model_dir, MODEL_MANIFEST))
    else:
        model_dir = None
    info = None
    for path in (lineage.get("data_manifest"), runtime.join(run_dir, "data", "manifest.json")):
        if path and runtime.exists(path):
            info = runtime.read_json(path)
            break
    run = RunRecord(run_dir=run_dir, summary=summary, rows=read_rows(run_dir), info=info, model_dir=model_dir,
                    recipe=lineage.get("recipe"), lineage=lineage)
    return run


def task_of(run: RunRecord) -> str:
    return ((run.recipe or {}).get("task") or (run.info or {}).get("task") or run.summary.get("task") or "lm")
