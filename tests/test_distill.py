"""Distillation on Ray Train: a trained tiny teacher teaches a smaller student through the generic loop."""

import json
import os

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from conftest import make_corpus, tiny_recipe
from lmstack.config import DistillConfig, RecipeError
from lmstack.data.prepare import prepare
from lmstack.data.tokenizer import char_tokenizer
from lmstack.models import build_causal_lm
from lmstack.tasks.distill import soft_kl
from lmstack.train.distill import distill
from lmstack.train.trainer import train

pytestmark = pytest.mark.usefixtures("ray_cluster")
quiet = lambda *_: None  # noqa: E731
T = 2.0


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """Prepared data and a teacher trained on it (2 layers x 32 wide; the students are 1 x 16)."""
    tmp = tmp_path_factory.mktemp("distill")
    recipe = tiny_recipe(tmp, make_corpus(tmp / "corpus", docs=80), max_steps=40, eval_every=40, lr=1e-2,
                         min_lr=1e-3, num_workers=1)
    recipe.model.n_layer, recipe.model.n_embd = 2, 32
    prepare(recipe, log=quiet)
    summary = train(recipe, log=quiet)
    return recipe, summary["model_dir"]


def student_recipe(teacher_recipe, teacher_dir, run_dir, **distill):
    recipe = teacher_recipe.model_copy(deep=True)
    recipe.data.output = teacher_recipe.data_dir()
    recipe.run_dir = str(run_dir)
    recipe.model.n_layer, recipe.model.n_embd = 1, 16
    recipe.train.num_workers = 2  # DDP: the teacher rides along on each worker, outside the module tree
    recipe.train.max_steps, recipe.train.eval_every = 40, 20
    recipe.distill = DistillConfig(teacher=teacher_dir, temperature=T, **distill)
    return recipe


def val_kl(model, teacher, data_dir):
    ids = torch.tensor(pq.read_table(os.path.join(data_dir, "val")).column("input_ids").to_pylist()[:32])
    with torch.no_grad():
        s, t = model.eval()(input_ids=ids).logits, teacher.eval()(input_ids=ids).logits
    return float(soft_kl(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), T))


def test_distilled_student_is_closer_to_teacher(teacher, tmp_path):
    teacher_recipe, teacher_dir = teacher
    recipe = student_recipe(teacher_recipe, teacher_dir, tmp_path / "student", alpha=0.8)
    summary = distill(recipe, log=quiet)

    assert summary["strategy"] == "distill" and summary["verb"] == "distill"
    assert {"val_loss", "val_kl", "trainable_params", "total_params", "wall_time_s", "model_dir"} <= set(summary)
    assert summary["trainable_params"] == summary["total_params"] < summary["teacher_params"]
    on_disk = json.load(open(tmp_path / "student" / "summary.json"))
    assert on_disk["val_kl"] == summary["val_kl"]

    # The export is the student alone: a plain 1-layer model whose tensors are the student's.
    student = AutoModelForCausalLM.from_pretrained(summary["model_dir"], local_files_only=True)
    assert student.config.n_layer == 1
    fresh = build_causal_lm(recipe.model, student.config.vocab_size, student.config.n_positions, 0)
    assert set(load_file(os.path.join(summary["model_dir"], "model.safetensors"))) <= set(fresh.state_dict())

    # Distillation moved the student towards the teacher: lower KL than the same student untrained.
    torch.manual_seed(recipe.train.seed)
    untrained = build_causal_lm(recipe.model, student.config.vocab_size, student.config.n_positions, 0)
    teach = AutoModelForCausalLM.from_pretrained(teacher_dir, local_files_only=True)
    before, after = val_kl(untrained, teach, recipe.data_dir()), val_kl(student, teach, recipe.data_dir())
    assert after < 0.5 * before, (before, after)
    rows = [json.loads(line) for line in open(tmp_path / "student" / "metrics.jsonl")]
    kls = [r["val_kl"] for r in rows if "val_kl" in r]
    assert len(kls) == 2 and kls[-1] == pytest.approx(summary["val_kl"], rel=0.2)


def test_teacher_with_another_tokenizer_fails_before_training(teacher, tmp_path):
    teacher_recipe, _ = teacher
    other = tmp_path / "other_teacher"
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz .")  # not the data's alphabet
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=32)).save_pretrained(other)
    tok.save_pretrained(other)
    recipe = student_recipe(teacher_recipe, str(other), tmp_path / "bad")
    with pytest.raises(RecipeError, match="must share the tokenizer"):
        distill(recipe, log=quiet)
    assert not os.path.exists(tmp_path / "bad" / "train")  # no Ray Train run started

    recipe.distill.teacher = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="distill.teacher"):
        distill(recipe, log=quiet)
