"""`lmstack train` as a user runs it, in a terminal: a header, one line per logged step and evaluation
printed by the driver, the closing summary with the artifacts' paths, and nothing of Ray's own logs
(they are in <run dir>/logs/ray.log); `--quiet` prints the summary alone. Also the end of every run:
report.html and an MLflow run in <runs root>/mlruns. One subprocess run (its own embedded cluster)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from builders import make_corpus, tiny_recipe

LMSTACK = [sys.executable, "-m", "lmstack"]


def test_train_console_is_short_and_shows_progress_and_the_summary(tmp_path):
    data = make_corpus(tmp_path / "corpus")
    recipe = tiny_recipe(tmp_path, data, num_workers=1)  # 20 steps, a log row every 5, an eval every 10
    raw = {**recipe.model_dump(mode="json"), "tracking": {"enabled": True}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = subprocess.run([*LMSTACK, "train", str(path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (out.stdout + out.stderr).splitlines()
    text = "\n".join(lines)
    assert len(lines) <= 45, text  # was ~280 lines (Ray Data plans and progress, worker echoes twice)
    assert lines[0].startswith("lmstack train tiny (task lm) · run dir ")
    steps = [line for line in lines if re.match(r"step \d+/20 · loss \d", line)]
    assert [int(re.match(r"step (\d+)", s).group(1)) for s in steps] == [5, 10, 15, 20], text
    assert sum("eval: val_loss" in s for s in steps) == 2  # one metrics line per evaluation
    for noise in ("RayTrainWorker", "TrainController", "logging_progress", "streaming_executor", "Execution plan",
                  "loss_type", "Loading weights", "Token authentication", "constructor arguments"):
        assert noise not in text, noise
    summary = json.loads(text[text.index("\n{") + 1: text.rindex("}") + 1])
    run_dir = tmp_path / "run"
    assert summary["model_dir"] == str(run_dir / "model") and summary["steps"] == 20
    assert f"report {run_dir / 'report.html'}" in text and "MLflow run " in text
    assert (run_dir / "report.html").is_file() and (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert "Started a local Ray instance" in (run_dir / "logs" / "ray.log").read_text()

    # Again with --quiet: the run is complete, so it resumes, exports again and prints only its summary.
    out = subprocess.run([*LMSTACK, "train", str(path), "--quiet"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout)["steps"] == 20
