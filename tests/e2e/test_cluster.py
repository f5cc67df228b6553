"""Integration on a multi-node local cluster (`lmstack cluster up`): jobs through the Job Submission API,
checkpoints on S3 (a moto server), and the failures users meet: a killed worker, a lost node, a killed
driver, a resume with another number of workers.

The cluster is a head and two worker nodes (1 logical CPU each), separate processes that this module
starts and stops by PID. This pytest process never connects to it (it may hold the session's embedded
cluster): it talks to the cluster over HTTP (jobs) and watches processes with psutil.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import make_corpus
from lmstack.cluster import jobs, local

pytestmark = pytest.mark.integration

STEPS = {"train.max_steps": 20, "train.eval_every": 5, "train.log_every": 5, "train.num_workers": 2,
         "train.max_failures": 3}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    c = local.up(workers=2, state_dir=str(state), head_cpus=1, worker_cpus=1, timeout=240)
    started = [n.pid for n in c.nodes]
    yield c
    c = local.LocalCluster.load(str(state))
    local.down(str(state))
    assert not [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("recipe")
    data = make_corpus(tmp / "corpus", docs=80)
    raw = {
        "name": "tiny",
        "run_dir": str(tmp / "run"),
        "data": {"paths": [str(data)], "block_size": 32, "val_fraction": 0.2, "output": str(tmp / "prepared")},
        "tokenizer": {"kind": "char"},
        "model": {"family": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16},
        "train": {"batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2, "eval_batches": 4},
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def overrides(**extra) -> list[str]:
    return [f"{k}={v}" for k, v in {**STEPS, **{k.replace("__", "."): v for k, v in extra.items()}}.items()]


def submit(cluster, recipe, verb="train", args=(), run_dir=None, env=None):
    return jobs.submit(str(recipe), verb, list(args), address=cluster.dashboard_url, run_dir=run_dir,
                       env_vars=env, headers=local.auth_headers(cluster.state_dir))


def follow(cluster, job_id, timeout=900) -> tuple[str, str]:
    out = io.StringIO()
    status = jobs.follow(job_id, cluster.dashboard_url, local.auth_headers(cluster.state_dir), out=out,
                         timeout=timeout)
    return status, out.getvalue()


def run_job(cluster, recipe, verb="train", args=(), run_dir=None, env=None):
    status, logs = follow(cluster, submit(cluster, recipe, verb, args, run_dir, env))
    assert status == "SUCCEEDED", logs[-3000:]
    return logs


def metrics(run_dir) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def eval_steps(rows) -> list[int]:
    return [r["step"] for r in rows if "val_loss" in r]


def printed_steps(logs: str) -> list[int]:
    steps = []
    for line in logs.splitlines():
        start = line.find("{")  # after Ray's "(RayTrainWorker pid=...)" prefix
        if start >= 0 and '"step"' in line and '"train_loss"' in line:
            try:
                step = json.loads(line[start:].strip())["step"]
            except ValueError:
                continue
            if step not in steps:  # Ray's log forwarding can repeat a line
                steps.append(step)
    return steps


def wait_for(cond, timeout=600, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(what)


def cluster_processes(cluster, needle: str) -> list[tuple[local.Node, psutil.Process]]:
    """Processes of this cluster (descendants of its nodes) whose command line contains `needle`."""
    found = []
    for node in cluster.nodes:
        for p in local._node_processes(node):
            try:
                if needle in " ".join(p.cmdline()):
                    found.append((node, p))
            except psutil.Error:
                continue
    return found


@pytest.fixture(scope="module")
def prepared(cluster, recipe):
    logs = run_job(cluster, recipe, "prepare")
    assert '"blocks"' in logs
    return recipe


@pytest.fixture(scope="module")
def baseline(cluster, prepared, tmp_path_factory):
    """An uninterrupted run of the standard steps, submitted as a job."""
    run_dir = tmp_path_factory.mktemp("baseline") / "run"
    logs = run_job(cluster, prepared, "train", overrides(), str(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary, logs, run_dir


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


def test_checkpoints_on_s3_and_resume_from_them(cluster, prepared, tmp_path):
    boto3 = pytest.importorskip("boto3")
    port = local._free_ports(1)[0]
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
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
