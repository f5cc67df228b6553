"""Distillation on Ray Train: a tiny teacher teaches a smaller student through the generic train loop.

Teachers are trained here in-process with the task's own build_model/loss (a few dozen steps of
plain PyTorch, seconds) and exported the way lmstack exports; only the distillation runs go through
Ray Train, with 2 workers so DDP wraps a student that carries its teacher outside the module tree.
"""

import json
import os
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

from conftest import make_corpus, tiny_recipe
from lmstack.config import DistillConfig, RecipeError, validate_recipe
from lmstack.data.tokenizer import char_tokenizer, load_tokenizer
from lmstack.tasks import get_spec
from lmstack.train.distill import distill
from lmstack.train.distill_task import soft_kl

pytestmark = pytest.mark.usefixtures("ray_cluster")
quiet = lambda *_: None  # noqa: E731
T = 2.0


def columns(split_dir, names):
    table = pq.read_table(split_dir)
    return {n: torch.tensor(np.stack(table.column(n).to_numpy(zero_copy_only=False))) for n in names}


def fit_teacher(task, recipe, info, names, out_dir, steps=60, lr=1e-2):
    """Train task.build_model in-process on the prepared train split; export model + tokenizer."""
    torch.manual_seed(0)
    model = task.build_model(recipe, info)
    data = columns(os.path.join(recipe.data_dir(), "train"), names)
    n = len(data["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = random.Random(0)
    model.train()
    for _ in range(steps):
        idx = torch.tensor([rng.randrange(n) for _ in range(16)])
        loss, _ = task.loss(model, {k: v[idx] for k, v in data.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    export = getattr(task, "export_model", None)
    export(model, out_dir) if export else model.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(info["tokenizer"]["dir"]).save_pretrained(out_dir)
    return str(out_dir)


def student_of(teacher_recipe, teacher_dir, run_dir, **distill_fields):
    recipe = teacher_recipe.model_copy(deep=True)
    recipe.data.output = teacher_recipe.data_dir()
    recipe.run_dir = str(run_dir)
    recipe.model.n_layer, recipe.model.n_embd = 1, 16
    recipe.train.num_workers = 1 if recipe.train.in_process else 2  # the LM student distills with DDP
    recipe.train.max_steps, recipe.train.eval_every = 40, 20
    recipe.distill = DistillConfig(teacher=teacher_dir, temperature=T, **distill_fields)
    return recipe


def untrained_student(task, recipe, info):
    torch.manual_seed(recipe.train.seed)  # the loop seeds the same way before build_model
    return task.build_model(recipe, info).eval()


def kl_to(model, teacher, batch, logits):
    with torch.no_grad():
        s, t = logits(model, batch), logits(teacher, batch)
    return float(soft_kl(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), T))


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    from lmstack.tasks import get_spec

    tmp = tmp_path_factory.mktemp("distill_lm")
    recipe = tiny_recipe(tmp, make_corpus(tmp / "corpus", docs=80))
    recipe.model.n_layer, recipe.model.n_embd = 2, 32
    info = get_spec("lm").prepare(recipe, log=quiet)
    task = get_spec("lm")
    return recipe, info, fit_teacher(task, recipe, info, ["input_ids"], tmp / "teacher")


def test_lm_student_moves_towards_teacher(lm_setup, tmp_path):
    teacher_recipe, info, teacher_dir = lm_setup
    recipe = student_of(teacher_recipe, teacher_dir, tmp_path / "student", alpha=0.8)
    summary = distill(recipe, log=quiet)

    assert summary["strategy"] == "distill" and summary["verb"] == "distill"
    assert {"val_loss", "val_kl", "trainable_params", "total_params", "wall_time_s", "model_dir"} <= set(summary)
    assert summary["trainable_params"] == summary["total_params"] < summary["teacher_params"]
    assert json.load(open(tmp_path / "student" / "summary.json"))["val_kl"] == summary["val_kl"]

    # The export is the student alone: a plain 1-layer model, no teacher tensor in its file.
    student = AutoModelForCausalLM.from_pretrained(summary["model_dir"], local_files_only=True)
    task = get_spec("lm")
    fresh = untrained_student(task, recipe, info)
    assert student.config.n_layer == 1
    assert set(load_file(os.path.join(summary["model_dir"], "model.safetensors"))) <= set(fresh.state_dict())

    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, local_files_only=True).eval()
    batch = columns(os.path.join(recipe.data_dir(), "val"), ["input_ids"])
    batch = {"input_ids": batch["input_ids"][:32].long()}
    logits = lambda m, b: m(input_ids=b["input_ids"]).logits  # noqa: E731
    before, after = kl_to(fresh, teacher, batch, logits), kl_to(student.eval(), teacher, batch, logits)
    assert after < 0.8 * before, (before, after)
    kls = [r["val_kl"] for r in map(json.loads, open(tmp_path / "student" / "metrics.jsonl")) if "val_kl" in r]
    assert len(kls) == 2 and kls[-1] < kls[0]


def test_teacher_with_another_tokenizer_fails_before_training(lm_setup, tmp_path):
    teacher_recipe, _, _ = lm_setup
    other = tmp_path / "other_teacher"
    tok = char_tokenizer("abcdefghijklmnopqrstuvwxyz .")  # not the data's alphabet
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=32)).save_pretrained(other)
    tok.save_pretrained(other)
    recipe = student_of(teacher_recipe, str(other), tmp_path / "bad")
    with pytest.raises(RecipeError, match="must share the tokenizer"):
        distill(recipe, log=quiet)
    assert not os.path.exists(tmp_path / "bad" / "train")  # no Ray Train run started

    recipe.distill.teacher = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="distill.teacher"):
        distill(recipe, log=quiet)


def classify_records(path, n=240, seed=0):
    """Three classes told apart by which letters dominate the text."""
    rng = random.Random(seed)
    alphabets = {"ci": "abcdef", "qu": "ghijkl", "shi": "mnopqr"}
    with open(path, "w") as f:
        for i in range(n):
            label = list(alphabets)[i % 3]
            chars = [rng.choice(alphabets[label]) if rng.random() < 0.7 else rng.choice("abcdefghijklmnopqr ")
                     for _ in range(rng.randint(10, 24))]
            f.write(json.dumps({"id": str(i), "text": "".join(chars), "label": label}) + "\n")
    return str(path)


def test_classifier_student_learns_teacher_distribution(tmp_path):
    recipe = validate_recipe({
        "name": "clf", "task": "classify", "run_dir": str(tmp_path / "teacher_run"),
        "data": {"paths": [classify_records(tmp_path / "records.jsonl")], "val_fraction": 0.25},
        "tokenizer": {"kind": "char"},
        "model": {"family": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 32},
        "classify": {"max_length": 24},
        "train": {"in_process": True, "batch_size": 8, "max_steps": 40, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
                  "eval_every": 20, "eval_batches": 8, "log_every": 10},
    }, "test")
    task = get_spec("classify")
    info = task.prepare(recipe, log=quiet)
    names = ["input_ids", "attention_mask", "labels"]
    teacher_dir = fit_teacher(task, recipe, info, names, tmp_path / "teacher")

    student_recipe = student_of(recipe, teacher_dir, tmp_path / "student", alpha=0.7)
    summary = distill(student_recipe, log=quiet)
    assert {"val_accuracy", "val_macro_f1", "val_kl", "trainable_params", "total_params"} <= set(summary)
    student = AutoModelForSequenceClassification.from_pretrained(summary["model_dir"], local_files_only=True)
    assert student.config.id2label == {i: lab for i, lab in enumerate(info["labels"])}

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, local_files_only=True).eval()
    val = {k: v.long() for k, v in columns(os.path.join(recipe.data_dir(), "val"), names).items()}
    fresh = untrained_student(task, student_recipe, info)
    before, after = kl_to(fresh, teacher, val, task.logits), kl_to(student.eval(), teacher, val, task.logits)
    assert after < 0.8 * before, (before, after)
