"""Integration: prepare -> train with 2 workers (DDP) -> checkpoint -> resume -> export -> generate -> evaluate.

Exact resumption is tested in process (tests/unit/test_trainer.py); a killed worker, a killed driver and a
lost node on a multi-node cluster in tests/e2e/test_cluster.py."""

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import make_corpus, tiny_recipe
from lmstack.evaluate.split import evaluate
from lmstack.models.generate import generate
from lmstack.tasks import get_spec
from lmstack.train.trainer import train

pytestmark = pytest.mark.usefixtures("ray_cluster")
quiet = lambda *_: None  # noqa: E731


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepared")
    data = make_corpus(tmp / "corpus", docs=80)
    recipe = tiny_recipe(tmp, data)
    get_spec("lm").prepare(recipe, log=quiet)
    return recipe


def recipe_in(prepared, run_dir, **train_fields):
    recipe = prepared.model_copy(deep=True)
    recipe.data.output = prepared.data_dir()
    recipe.run_dir = str(run_dir)
    for key, value in train_fields.items():
        setattr(recipe.train, key, value)
    return recipe


def checkpoint_step(path):
    state = torch.load(os.path.join(path, "train_state.pt"), weights_only=True)
    return state["progress"]["step"]


def metrics_rows(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path)]


def test_train_export_resume_and_generate(prepared, tmp_path):
    recipe = recipe_in(prepared, tmp_path / "run", max_steps=20)
    summary = train(recipe, log=quiet)
    assert summary["steps"] == 20 and summary["val_loss"] < 3.5  # ln(vocab ~ 40) = 3.7 untrained
    assert {"val_loss", "val_ppl", "val_bpb", "steps", "model_dir", "wall_time_s"} <= set(summary)
    rows = metrics_rows(recipe.run_dir)
    assert [r["step"] for r in rows if "val_loss" in r] == [10, 20]
    ckpts = sorted(p for p in os.listdir(tmp_path / "run" / "train") if p.startswith("checkpoint_2"))
    assert len(ckpts) == 2

    # Plain transformers loads the export and generates.
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"], local_files_only=True)
    tok = AutoTokenizer.from_pretrained(summary["model_dir"], local_files_only=True)
    assert model.config.model_type == "gpt2" and tok.eos_token == "<|endoftext|>"
    text = generate(summary["model_dir"], "the ", max_new_tokens=50, seed=0)
    assert 0 < len(text) <= 50  # one character per token; EOS samples decode to nothing

    # Same run directory, more steps: resumes from step 20 instead of starting again.
    recipe.train.max_steps = 30
    again = train(recipe, log=quiet)
    assert again["steps"] == 30
    evals = {r["step"]: r["val_loss"] for r in metrics_rows(recipe.run_dir) if "val_loss" in r}
    assert list(evals) == [10, 20, 30]
    # Kept on disk: the best K by val_loss, plus the latest (what a resume needs).
    kept = {checkpoint_step(tmp_path / "run" / "train" / p)
            for p in os.listdir(tmp_path / "run" / "train") if p.startswith("checkpoint_2")}
    best_k = set(sorted(evals, key=evals.get)[: recipe.train.keep_checkpoints])
    assert kept == best_k | {30}

    # `lmstack evaluate` on the export sees the same validation data as training did.
    evaluated = evaluate(recipe, log=quiet)
    assert evaluated["val_loss"] == pytest.approx(again["val_loss"], rel=0.1)
    assert os.path.exists(tmp_path / "run" / "evaluate" / "metrics.json")


def test_in_process_training_keeps_checkpoints_resumes_and_exports_like_ray_train(prepared, tmp_path):
    """train.in_process: the same loop without Ray Train's worker group; the run dir looks the same to every
    later verb (metrics.jsonl, an exported model, summary), checkpoints kept by the same rule."""
    recipe = recipe_in(prepared, tmp_path / "run", max_steps=20, num_workers=1, in_process=True, eval_every=5)
    summary = train(recipe, log=quiet)
    assert summary["steps"] == 20 and summary["val_loss"] < 3.5
    assert [r["step"] for r in metrics_rows(recipe.run_dir) if "val_loss" in r] == [5, 10, 15, 20]
    model = AutoModelForCausalLM.from_pretrained(summary["model_dir"], local_files_only=True)
    assert model.config.model_type == "gpt2"

    recipe.train.max_steps = 30
    again = train(recipe, log=quiet)
    evals = {r["step"]: r["val_loss"] for r in metrics_rows(recipe.run_dir) if "val_loss" in r}
    assert again["steps"] == 30 and list(evals) == [5, 10, 15, 20, 25, 30]  # resumed, not restarted
    root = tmp_path / "run" / "in_process"
    kept = {checkpoint_step(root / p) for p in os.listdir(root) if p.startswith("checkpoint_")}
    best_k = set(sorted(evals, key=evals.get)[: recipe.train.keep_checkpoints])
    assert kept == best_k | {30}
    assert again["best_step"] == min(evals, key=evals.get)
    assert not [p for p in os.listdir(root) if p.startswith(".staging")]

    two = recipe_in(prepared, tmp_path / "two", num_workers=2, in_process=True)
    with pytest.raises(Exception, match="num_workers=1"):
        train(two, log=quiet)
