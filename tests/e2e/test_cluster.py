"""Jobs on a multi-node local cluster (`lmstack cluster up`) through the Job Submission API: a job's logs and
the jobs CLI, checkpoints on S3 (a moto server) and a resume from them, and a lost worker node (last: it takes
a node away). Fixtures in cluster_helpers.py; the killed worker and driver are in test_cluster_failures.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

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


def test_cluster_status_lists_its_nodes(cluster):
    s = local.status(cluster.state_dir)
    assert [n["role"] for n in s["nodes"]] == ["head", "worker", "worker"]
    assert all(n["alive"] for n in s["nodes"])
    out = subprocess.run([sys.executable, "-m", "lmstack", "cluster", "status", "--state-dir", cluster.state_dir],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["address"] == cluster.address


def test_submitted_job_finishes_and_its_logs_come_back(cluster, baseline):
    summary, logs, run_dir = baseline
    assert summary["steps"] == 20 and summary["val_loss"] < 3.5
    assert printed_steps(logs) == [5, 10, 15, 20]  # the training rows printed by the workers' loop
    assert "trained tiny" in logs
    assert (run_dir / "model" / "config.json").is_file()
    listed = jobs.list_jobs(cluster.dashboard_url, local.auth_headers(cluster.state_dir))
    assert sum(r["status"] == "SUCCEEDED" and "jobs/run.py train" in r["entrypoint"] for r in listed) >= 1

    # The CLI against the same head: list, status, logs.
    env = {**os.environ, "LMSTACK_CLUSTER_DIR": cluster.state_dir}
    cli = [sys.executable, "-m", "lmstack", "jobs"]
    out = subprocess.run([*cli, "list", "--address", cluster.dashboard_url], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCEEDED" in out.stdout, out.stderr
    job_id = out.stdout.splitlines()[-1].split("\t")[0]
    out = subprocess.run([*cli, "status", job_id, "--address", cluster.dashboard_url], env=env,
                         capture_output=True, text=True, timeout=60)
    assert json.loads(out.stdout)["status"] == "SUCCEEDED"
    out = subprocess.run([*cli, "logs", job_id, "--address", cluster.dashboard_url], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip()


def test_checkpoints_on_s3_and_resume_from_them(cluster, prepared, s3_endpoint, tmp_path):
    boto3 = pytest.importorskip("boto3")
    port = int(s3_endpoint.rsplit(":", 1)[1])
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = None  # the nodes hold the credentials and endpoint (cluster_helpers.cluster)
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
        wait_for(lambda: local._port_open(f"127.0.0.1:{port}"), 60, "moto server")
        s3.create_bucket(Bucket="lmstack-test")
        run_dir = "s3://lmstack-test/runs/tiny"

        run_job(cluster, prepared, "train", overrides(train__max_steps=10), run_dir, env)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="lmstack-test")["Contents"]]
        assert any(k.startswith("runs/tiny/train/checkpoint_") for k in keys)
        assert "runs/tiny/summary.json" in keys and "runs/tiny/model/config.json" in keys

        logs = run_job(cluster, prepared, "train", overrides(), run_dir, env)  # same URI, more steps
        assert printed_steps(logs) == [15, 20]
        body = s3.get_object(Bucket="lmstack-test", Key="runs/tiny/metrics.jsonl")["Body"].read().decode()
        assert eval_steps([json.loads(line) for line in body.splitlines()]) == [5, 10, 15, 20]
        summary = json.loads(s3.get_object(Bucket="lmstack-test", Key="runs/tiny/summary.json")["Body"].read())
        assert summary["steps"] == 20
    finally:
        server.terminate()
        server.wait(10)


def test_remove_a_worker_node_training_continues(cluster, prepared, baseline, tmp_path):
    """Last: it takes a node away. The run continues from its latest checkpoint on the head and the
    remaining worker node and ends where an uninterrupted run ends."""
    run_dir = tmp_path / "run"
    job = submit(cluster, prepared, "train", overrides(), str(run_dir))
    wait_for(lambda: any(r["step"] >= 5 for r in metrics(run_dir)), what="step 5")
    on_workers = wait_for(lambda: [n for n, _ in cluster_processes(cluster, "RayTrainWorker") if n.role == "worker"],
                          what="a training worker on a worker node")
    cluster.remove_node(on_workers[0], signal.SIGKILL)
    status, logs = follow(cluster, job)
    assert status == "SUCCEEDED", logs[-3000:]
    assert len(cluster.alive()) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 20
    assert eval_steps(metrics(run_dir)) == [5, 10, 15, 20]
    assert summary["val_loss"] == pytest.approx(baseline[0]["val_loss"], rel=0.02)
