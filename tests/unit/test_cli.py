"""The CLI as users run it: one-line errors before any cluster work, resolved recipes."""

import subprocess
import sys
import time

import yaml

LMSTACK = [sys.executable, "-m", "lmstack"]


def run(*args, env=None):
    return subprocess.run([*LMSTACK, *args], capture_output=True, text=True, timeout=120, env=env)


def test_config_show_applies_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  paths: [x.txt]\n")
    out = run("config", "show", str(recipe), "train.lr=3e-4", "model.n_layer=2")
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    assert resolved["train"]["lr"] == 3e-4 and resolved["model"]["n_layer"] == 2
    assert resolved["name"] == "r" and resolved["tokenizer"]["kind"] == "bpe"


def test_invalid_recipe_fails_fast_with_one_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("data:\n  paths: [x.txt]\ntrain:\n  lr: -1\n")
    started = time.time()
    out = run("train", str(recipe))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"lmstack train: error: {recipe}: train.lr: Input should be greater than 0"
    ]
    assert "Traceback" not in out.stderr and time.time() - started < 30  # no Ray was started


def test_missing_data_is_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  paths: ['{tmp_path}/nope/*.txt']\n")
    out = run("prepare", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("nope/*.txt' matches no files")
