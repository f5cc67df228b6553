"""Fixtures and helpers of the multi-node tests: each test module starts its own local cluster (a head and
two worker nodes of 1 logical CPU, separate processes started and stopped by PID), so the modules run in
parallel test processes. This pytest process never connects to those clusters: it talks to them over HTTP
(jobs) and watches processes with psutil."""


from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import psutil
import pytest
import yaml

from builders import make_corpus
from lmstack.cluster import jobs, local

STEPS = {"train.max_steps": 20, "train.eval_every": 5, "train.log_every": 5, "train.num_workers": 2,
         "train.max_failures": 3}


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    """Where test_cluster.py's moto server will listen. The nodes get its (fake) credentials in their own
    environment at start, as a real cluster gets them from its roles: `--env` refuses credentials."""
    return f"http://127.0.0.1:{local._free_ports(1)[0]}"


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint):
    state = tmp_path_factory.mktemp("cluster")
    node_env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}
    saved = {k: os.environ.get(k) for k in node_env}
    os.environ.update(node_env)  # inherited by the node processes only: restored right after they start
    try:
        c = local.up(workers=2, state_dir=str(state), head_cpus=1, worker_cpus=1, timeout=240)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
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
    """The training steps the driver's progress lines showed ("step 10/20 · loss ..."), in order, once each."""
    steps = []
    for match in re.finditer(r"^step (\d+)/\d+ · loss ", logs, flags=re.M):
        step = int(match.group(1))
        if step not in steps:
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


