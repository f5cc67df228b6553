"""`lmstack submit` and `lmstack jobs`: lmstack verbs as Ray jobs, through the Job Submission API.

A submission carries the project: runtime_env `working_dir` is the repository (without .venv, runs/,
.git and caches) and `py_modules` is the lmstack package itself, so the driver and every Ray worker
import the submitted code, not whatever the cluster has installed. The cluster's image provides the
dependencies (cluster/*.yaml and cluster/Dockerfile install them). The entrypoint is
`python jobs/run.py <verb> RECIPE [overrides] [--run-dir DIR]`, the same as `lmstack <verb>`.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
from typing import Any

PROJECT_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
            "node_modules", "*.pt", "*.safetensors"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


JOB_VERBS = ("compress", "distill", "evaluate", "finetune", "generate", "prepare", "quickstart", "train", "tune")


def verbs() -> list[str]:
    """The verbs a job runs through jobs/run.py."""
    return list(JOB_VERBS)


def auth_headers_for(address: str) -> dict[str, str] | None:
    """The token of a cluster started by `lmstack cluster up`, when `address` is its dashboard."""
    from lmstack.cluster import local

    try:
        cluster = local.LocalCluster.load()
    except (FileNotFoundError, ValueError, KeyError):
        return None
    if address.rstrip("/") != cluster.dashboard_url:
        return None
    return local.auth_headers(cluster.state_dir)


def client(address: str | None = None, headers: dict[str, str] | None = None):
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_DASHBOARD_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ValueError("no cluster address: pass --address http://HEAD:8265 (or set RAY_ADDRESS)")
    if "://" not in address:
        address = f"http://{address}"
    headers = headers if headers is not None else auth_headers_for(address)
    return JobSubmissionClient(address, headers=headers or None)


def entrypoint(recipe: str, verb: str = "train", overrides: list[str] | tuple[str, ...] = (),
               run_dir: str | None = None, root: str = PROJECT_ROOT) -> str:
    """`python jobs/run.py <verb> ...` with the recipe as a path the job can open."""
    if verb not in JOB_VERBS:
        raise ValueError(f"unknown verb {verb!r}: jobs run {', '.join(JOB_VERBS)}")
    path = os.path.abspath(recipe)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{recipe}: no such recipe file")
    inside = os.path.commonpath([path, root]) == root
    # Inside the project the recipe travels with working_dir; outside it the cluster must see the path.
    recipe_arg = os.path.relpath(path, root) if inside else path
    args = ["python", "jobs/run.py", verb, recipe_arg, *overrides]
    if run_dir:
        args += ["--run-dir", run_dir]
    return shlex.join(args)


# A job's runtime_env is shown, values included, by the Jobs API, `ray job list` and the dashboard.
_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE|(^|_)KEY($|_)|_KEY_ID$|AUTH)", re.I)


def check_env(env_vars: dict[str, str]) -> None:
    """Refuse what looks like a credential in a job's environment; it belongs on the cluster (an instance
    role or service account for storage, a Kubernetes Secret or an environment file on the nodes)."""
    secret = sorted(k for k in env_vars if _SECRET_NAME.search(k))
    if secret:
        raise ValueError(
            f"--env {', '.join(secret)}: a job's environment is shown to anyone who can list jobs (Jobs API, "
            "dashboard); give the cluster's nodes the credential instead (an instance role or service account "
            "for the run bucket, a Kubernetes Secret or the nodes' environment)")


def runtime_env(root: str = PROJECT_ROOT, env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    check_env(env_vars or {})
    return {
        "working_dir": root,
        "excludes": EXCLUDES,
        "py_modules": [os.path.join(root, "platform", "lmstack")],
        # Also seen by the job's actors (Ray Train's controller): report() stays cheap (RAY_NOTES).
        "env_vars": {"LMSTACK_PROGRESS": "0", "PYTHONUNBUFFERED": "1", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
                     "RAY_USAGE_STATS_ENABLED": "0", **(env_vars or {})},
    }


def submit(recipe: str, verb: str = "train", overrides: list[str] | tuple[str, ...] = (), *,
           address: str | None = None, run_dir: str | None = None, env_vars: dict[str, str] | None = None,
           submission_id: str | None = None, headers: dict[str, str] | None = None,
           root: str = PROJECT_ROOT) -> str:
    """Submit `lmstack <verb> RECIPE overrides` as a Ray job; returns the submission id."""
    cmd = entrypoint(recipe, verb, overrides, run_dir, root)
    c = client(address, headers)
    return c.submit_job(
        entrypoint=cmd,
        runtime_env=runtime_env(root, env_vars),
        submission_id=submission_id,
        metadata={"lmstack_verb": verb, "lmstack_recipe": os.path.basename(recipe)},
    )


def follow(job_id: str, address: str | None = None, headers: dict[str, str] | None = None,
           out=None, timeout: float | None = None) -> str:
    """Stream the job's logs to `out` until it ends; returns its final status."""
    out = out or sys.stdout
    c = client(address, headers)

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(asyncio.wait_for(tail(), timeout))
    except asyncio.TimeoutError:
        pass
    return wait(job_id, address, headers, timeout=30)


def wait(job_id: str, address: str | None = None, headers: dict[str, str] | None = None,
         timeout: float = 600) -> str:
    c = client(address, headers)
    deadline = time.time() + timeout
    while True:
        status = str(c.get_job_status(job_id).value)
        if status in TERMINAL or time.time() > deadline:
            return status
        time.sleep(1)


def list_jobs(address: str | None = None, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for job in client(address, headers).list_jobs():
        rows.append({
            "submission_id": job.submission_id,
            "status": str(job.status.value),
            "entrypoint": job.entrypoint,
            "start_time": job.start_time,
            "end_time": job.end_time,
            "message": job.message,
        })
    return sorted(rows, key=lambda r: r["start_time"] or 0)


def job_status(job_id: str, address: str | None = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    info = client(address, headers).get_job_info(job_id)
    return {"submission_id": info.submission_id, "status": str(info.status.value), "message": info.message,
            "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time,
            "driver_exit_code": getattr(info, "driver_exit_code", None)}


def logs(job_id: str, address: str | None = None, headers: dict[str, str] | None = None) -> str:
    return client(address, headers).get_job_logs(job_id)


def stop(job_id: str, address: str | None = None, headers: dict[str, str] | None = None) -> bool:
    return client(address, headers).stop_job(job_id)
