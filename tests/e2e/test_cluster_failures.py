"""Failures on a multi-node local cluster: a killed training worker is replaced; a killed driver's job,
resubmitted with fewer workers, resumes from the latest checkpoint. Fixtures in cluster_helpers.py."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from cluster_helpers import (  # noqa: F401  (module fixtures)
    baseline,
    cluster,
    cluster_processes,
    eval_steps,
    follow,
    metrics,
    overrides,
    prepared,
    printed_steps,
    recipe,
    run_job,
    s3_endpoint,
    submit,
    wait_for,
)
from lmstack.cluster import jobs, local

pytestmark = pytest.mark.integration


def test_kill_a_training_worker_it_is_replaced(cluster, prepared, tmp_path):
    run_dir = tmp_path / "run"
    job = submit(cluster, prepared, "train", overrides(), str(run_dir))
    wait_for(lambda: any(r["step"] >= 5 for r in metrics(run_dir)), what="step 5")
    workers = wait_for(lambda: cluster_processes(cluster, "RayTrainWorker"), what="a RayTrainWorker")
    victim = workers[-1][1]
    os.kill(victim.pid, signal.SIGKILL)
    status, logs = follow(cluster, job)
    assert status == "SUCCEEDED", logs[-3000:]
    assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20
    assert eval_steps(metrics(run_dir)) == [5, 10, 15, 20]


def test_kill_the_driver_resubmit_resumes_with_fewer_workers(cluster, prepared, tmp_path):
    """Failures 3 and 4: the driver dies (kill -9); the job resubmitted with one worker instead of two
    resumes from the latest checkpoint, and no step after it is trained twice."""
    run_dir = tmp_path / "run"
    job = submit(cluster, prepared, "train", overrides(), str(run_dir))
    # Right after the first checkpoint (step 5): the workers die a moment after their driver, and
    # they must not reach the last step in that moment.
    wait_for((run_dir / "train" / "checkpoint_manager_snapshot.json").exists, what="a registered checkpoint")
    drivers = [p for _, p in cluster_processes(cluster, "jobs/run.py train") if str(run_dir) in " ".join(p.cmdline())]
    assert drivers
    for p in drivers:
        os.kill(p.pid, signal.SIGKILL)
    status = jobs.wait(job, cluster.dashboard_url, local.auth_headers(cluster.state_dir), timeout=120)
    assert status == "FAILED"
    killed_at = max(r["step"] for r in metrics(run_dir))
    assert killed_at < 20

    logs = run_job(cluster, prepared, "train", overrides(train__num_workers=1), str(run_dir))
    resumed = printed_steps(logs)
    # It starts right after a checkpoint (one per eval), not from scratch, and never goes back.
    assert resumed and 10 <= resumed[0] <= killed_at + 5 and resumed[0] % 5 == 0, resumed
    assert resumed == sorted(resumed) and resumed[-1] == 20
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == sorted(set(steps))  # the history holds each step once
    assert eval_steps(metrics(run_dir)) == [5, 10, 15, 20]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20 and summary["val_loss"] < 3.5


