"""Recipe inputs checked on the driver before any data is read or any cluster starts."""

import subprocess
import sys

import pytest
import torch

from builders import make_corpus, tiny_recipe
from lmstack import runtime
from lmstack.config import RecipeError
from lmstack.models.loading import UnsafeModelError
from lmstack.tasks import get_spec
from lmstack.train.prepared import ensure_prepared
from lmstack.train.trainer import check_metrics


@pytest.fixture
def no_cluster(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("a cluster was started before the recipe's inputs were checked")

    monkeypatch.setattr(runtime, "connect", refuse)


@pytest.mark.parametrize("key", ["model.path", "finetune.from_model"])
def test_a_missing_or_pickled_model_dir_fails_before_any_cluster(tmp_path, no_cluster, key):
    recipe = tiny_recipe(tmp_path, make_corpus(tmp_path / "c", docs=3))
    section, field = key.split(".")
    setattr(getattr(recipe, section), field, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match=f"{key} '.*nope' does not exist"):
        ensure_prepared(recipe, get_spec("lm"))
    (tmp_path / "pickled").mkdir()
    torch.save({"w": torch.zeros(1)}, tmp_path / "pickled" / "pytorch_model.bin")
    setattr(getattr(recipe, section), field, str(tmp_path / "pickled"))
    with pytest.raises(UnsafeModelError, match=f"{key} .*no model.safetensors"):
        ensure_prepared(recipe, get_spec("lm"))


def test_an_early_stopping_metric_the_task_never_reports_is_refused(tmp_path):
    recipe = tiny_recipe(tmp_path, tmp_path, early_stopping={"metric": "val_accuracy", "patience": 2})
    with pytest.raises(RecipeError, match=r"train.early_stopping.metric: task 'lm' reports \[.*'val_loss'"):
        check_metrics(recipe, get_spec("lm"))
    check_metrics(tiny_recipe(tmp_path, tmp_path, early_stopping={"metric": "val_ppl", "patience": 2}),
                  get_spec("lm"))


def test_cli_pickled_model_path_is_one_line(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"pickle")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data:\n  paths: ['{tmp_path}']\nmodel:\n  path: {tmp_path / 'm'}\n")
    out = subprocess.run([sys.executable, "-m", "lmstack", "train", str(recipe), "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"lmstack train: error: model.path '{tmp_path / 'm'}'")


def test_translate_preflight_refusals_are_user_errors():
    """Raised as ValueError they printed a traceback; a RecipeError is one line naming model.path."""
    from transformers import GPT2Config

    from lmstack.tasks.translate.decoder import check_fits

    with pytest.raises(RecipeError, match="model.path /m: vocabulary 10 is not the translate tokenizer's"):
        check_fits(GPT2Config(vocab_size=10, n_positions=64), 20, 32, "/m")
    with pytest.raises(RecipeError, match="model.path /m: context 16 is shorter"):
        check_fits(GPT2Config(vocab_size=20, n_positions=16), 20, 32, "/m")


def test_an_empty_split_is_one_line_before_training(tmp_path, no_cluster):
    from lmstack.artifacts import data_manifest_path
    from lmstack.data.read import DataSourceError

    recipe = tiny_recipe(tmp_path, make_corpus(tmp_path / "c", docs=3))
    spec = get_spec("lm")
    manifest = {"prepare_hash": spec.prepare_hash(recipe), "blocks": {"train": 12, "val": 0}}
    runtime.write_json(data_manifest_path(recipe), manifest)
    with pytest.raises(DataSourceError, match=r"the val split holds no block of data.block_size=32 tokens"):
        ensure_prepared(recipe, spec)
    runtime.write_json(data_manifest_path(recipe), {**manifest, "blocks": {"train": 12, "val": 3}})
    assert ensure_prepared(recipe, spec)["blocks"]["val"] == 3


def test_a_user_error_raised_in_a_ray_worker_is_still_one_line(monkeypatch, capsys):
    import argparse

    from ray.train.v2.api.exceptions import WorkerGroupError

    import lmstack.cli as cli

    inner = RecipeError("model.path /m: vocabulary 10 is not the translate tokenizer's (20)")
    wrapped = WorkerGroupError("Training failed due to worker errors", {0: inner})
    assert cli.user_error(wrapped) is inner
    assert cli.user_error(RuntimeError("a bug")) is None

    def verb(_):
        raise wrapped

    parser = argparse.ArgumentParser()
    parser.set_defaults(fn=verb)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 2
    assert capsys.readouterr().err == f"lmstack lmstack: error: {inner}\n"
