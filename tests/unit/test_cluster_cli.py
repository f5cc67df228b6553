"""Fast checks of `lmstack submit/jobs/cluster` without a cluster: entrypoints, runtime env, argument
parsing, and that `down` stops exactly the processes in the state file."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from lmstack.cli import build_parser
from lmstack.cluster import jobs, local

ROOT = jobs.PROJECT_ROOT


def test_entrypoint_is_the_jobs_script(tmp_path):
    inside = os.path.join(ROOT, "jobs", "recipes", "shakespeare_char.yaml")
    cmd = jobs.entrypoint(inside, "train", ["train.max_steps=5"], run_dir="s3://b/run")
    assert cmd == "python jobs/run.py train jobs/recipes/shakespeare_char.yaml train.max_steps=5 --run-dir s3://b/run"
    outside = tmp_path / "r.yaml"
    outside.write_text("name: x\n")
    assert jobs.entrypoint(str(outside), "prepare") == f"python jobs/run.py prepare {outside}"
    with pytest.raises(ValueError, match="unknown verb"):
        jobs.entrypoint(inside, "nope")
    with pytest.raises(FileNotFoundError):
        jobs.entrypoint(str(tmp_path / "missing.yaml"))
    assert {"train", "prepare", "evaluate"} <= set(jobs.verbs())


def test_runtime_env_carries_the_project_without_its_bulk():
    env = jobs.runtime_env(env_vars={"AWS_ENDPOINT_URL": "http://x"})
    assert env["working_dir"] == ROOT and os.path.isfile(os.path.join(ROOT, "jobs", "run.py"))
    assert {".venv", "runs", ".git"} <= set(env["excludes"])
    assert env["py_modules"] == [os.path.join(ROOT, "platform", "lmstack")]
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == "http://x"


def test_cli_parses_submit_jobs_and_cluster():
    p = build_parser()
    a = p.parse_args(["submit", "r.yaml", "prepare", "data.block_size=8", "--address", "http://h:8265"])
    assert (a.recipe, a.overrides, a.address) == ("r.yaml", ["prepare", "data.block_size=8"], "http://h:8265")
    a = p.parse_args(["jobs", "logs", "raysubmit_1", "-f", "--address", "http://h:8265"])
    assert (a.jobs_verb, a.job_id, a.follow) == ("logs", "raysubmit_1", True)
    a = p.parse_args(["cluster", "up", "--workers", "3", "--state-dir", "/tmp/x"])
    assert (a.cluster_verb, a.workers, a.state_dir) == ("up", 3, "/tmp/x")


def test_auth_headers_follow_the_local_cluster_state(tmp_path, monkeypatch):
    (tmp_path / "auth_token").write_text("abc\n")
    c = local.LocalCluster(str(tmp_path), str(tmp_path / "t"), "127.0.0.1:1", "http://127.0.0.1:2", [])
    c.save()
    monkeypatch.setenv("LMSTACK_CLUSTER_DIR", str(tmp_path))
    assert jobs.auth_headers_for("http://127.0.0.1:2/") == {"Authorization": "Bearer abc"}
    assert jobs.auth_headers_for("http://elsewhere:8265") is None


def test_down_stops_exactly_the_recorded_process_groups(tmp_path):
    """Fake nodes: a process with a child, each in its own session as `ray start --block` would be."""
    code = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    procs = [subprocess.Popen([sys.executable, "-c", code], start_new_session=True) for _ in range(2)]
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)  # not in the state file
    try:
        nodes = [local.Node(role, p.pid, psutil.Process(p.pid).create_time(), 1, "log")
                 for role, p in zip(["head", "worker"], procs, strict=True)]
        c = local.LocalCluster(str(tmp_path), str(tmp_path / "t"), "127.0.0.1:1", "http://127.0.0.1:2", nodes)
        c.save()
        deadline = time.time() + 30
        while time.time() < deadline and not all(psutil.Process(p.pid).children() for p in procs):
            time.sleep(0.1)
        children = [ch.pid for p in procs for ch in psutil.Process(p.pid).children()]
        assert len(children) == 2
        assert [n["alive"] for n in local.status(str(tmp_path))["nodes"]] == [True, True]
        local.down(str(tmp_path), grace=2)
        for p in procs:
            p.wait(10)
        assert not [pid for pid in children if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        assert bystander.poll() is None  # untouched
        assert local.LocalCluster.load(str(tmp_path)).nodes == []
    finally:
        for p in [*procs, bystander]:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
