"""`serve run serving/config.yaml` (the deploy config shipped for clusters and KubeRay) serves a model
end to end: the same file with its model path pointed at a tiny model and a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from builders import free_port, make_tiny_lm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_serve_run_of_the_shipped_config_answers_completions(tmp_path):
    import ray
    from ray import serve

    config = yaml.safe_load((ROOT / "serving" / "config.yaml").read_text())
    port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"]["http_host"] = "127.0.0.1"  # the shipped 0.0.0.0 needs LMSTACK_API_KEY (or insecure: true)
    app["args"]["feedback_dir"] = str(tmp_path / "feedback")
    app["args"]["models"][0].update(path=make_tiny_lm(tmp_path / "model", 0), num_cpus=0.5,
                                    autoscaling={"min_replicas": 1, "max_replicas": 1})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    serve_bin = Path(sys.executable).with_name("serve")
    proc = subprocess.Popen([str(serve_bin), "run", str(path)], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/healthz", timeout=15).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or too busy to answer
                pass
            time.sleep(1)
        r = requests.post(f"{base}/v1/completions", json={"model": app["args"]["models"][0]["name"],
                                                           "prompt": "to be", "max_tokens": 8}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "text_completion" and r.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGINT)  # `serve run` deletes its application on Ctrl-C
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        serve.shutdown()
