"""The training loop in process, without Ray: what every task's training shares."""

from __future__ import annotations

import os

import pytest
import torch

from lmstack.config import validate_recipe
from lmstack.tasks import get_spec
from lmstack.train import checkpoint as ckpt
from lmstack.train.loop import Trainer

VOCAB, BLOCK = 24, 16
INFO = {"tokenizer": {"vocab_size": VOCAB}, "block_size": BLOCK, "eos_id": 0, "bytes_per_token_val": 1.0}


def recipe(**train):
    return validate_recipe({
        "name": "unit", "data": {"paths": ["unused"]},
        "model": {"family": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16},
        "train": {"batch_size": 4, "max_steps": 12, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2,
                  "eval_every": 6, "eval_batches": 2, "log_every": 3, "grad_clip": None, **train},
    }, "unit")


def batches(n: int, seed: int, rows: int = 4) -> list[dict[str, torch.Tensor]]:
    """A planted pattern (each token is the previous + 1): learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, VOCAB, (n, rows, 1), generator=g)
    return [{"input_ids": (s + torch.arange(BLOCK)) % VOCAB} for s in starts]


TRAIN, VAL = batches(6, 0), batches(2, 1)


def fit(r, resume: str | None = None, report=None):
    trainer = Trainer(r, get_spec("lm"), INFO, echo=None)
    if resume:
        trainer.resume(resume)
    rows = trainer.fit(lambda epoch: iter(TRAIN), lambda: iter(VAL), report)
    return trainer, rows


def test_loss_falls_and_evaluations_land_where_asked():
    trainer, rows = fit(recipe())
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] < 3.3  # ln(24) = 3.18 untrained
    assert {"train_loss", "lr", "tokens_per_s"} <= set(rows[0])
    assert trainer.progress.step == 12 and trainer.progress.epoch == 1  # 6 batches an epoch: stops in the 2nd


def test_resume_from_a_checkpoint_continues_exactly(tmp_path):
    straight, _ = fit(recipe())

    class Crash(Exception):
        pass

    def report(metrics, save):  # checkpoint at step 6, then the worker dies
        first.save(str(tmp_path))
        raise Crash

    first = Trainer(recipe(), get_spec("lm"), INFO, echo=None)
    with pytest.raises(Crash):
        first.fit(lambda epoch: iter(TRAIN), lambda: iter(VAL), report)
    assert first.progress.step == 6
    # The state loads without unpickling code (torch.load(weights_only=True)).
    torch.load(os.path.join(tmp_path, ckpt.STATE_FILE), weights_only=True)
    resumed, _ = fit(recipe(), resume=str(tmp_path))
    assert resumed.progress.step == 12
    for a, b in zip(straight.core.parameters(), resumed.core.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_gradient_accumulation_equals_the_larger_batch():
    """grad_accum=2 over batches of 2 rows takes the same steps as batches of 4 rows (dropout 0)."""
    big = [{"input_ids": b["input_ids"]} for b in TRAIN[:2]]
    halves = [{"input_ids": h} for b in big for h in b["input_ids"].split(2)]
    r1, r2 = recipe(max_steps=2, eval_every=2), recipe(max_steps=2, eval_every=2, grad_accum=2)
    a = Trainer(r1, get_spec("lm"), INFO, echo=None)
    a.fit(lambda e: iter(big), lambda: iter(VAL))
    b = Trainer(r2, get_spec("lm"), INFO, echo=None)
    b.fit(lambda e: iter(halves), lambda: iter(VAL))
    for p, q in zip(a.core.parameters(), b.core.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_a_partial_accumulation_at_an_epoch_end_is_dropped():
    """3 micro-batches an epoch with grad_accum=2: the odd one out must not leak into the next step."""
    three = TRAIN[:3]
    r = recipe(max_steps=2, eval_every=2, grad_accum=2)
    t = Trainer(r, get_spec("lm"), INFO, echo=None)
    t.fit(lambda e: iter(three), lambda: iter(VAL))
    # Step 2 used epoch 1's first two batches only: the same as a run whose epochs hold two batches.
    u = Trainer(r, get_spec("lm"), INFO, echo=None)
    u.fit(lambda e: iter(three[:2]), lambda: iter(VAL))
    for p, q in zip(t.core.parameters(), u.core.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_early_stopping_follows_the_metric_direction():
    r = recipe(max_steps=60, eval_every=1, log_every=1, lr=1e-6, min_lr=1e-6,
               early_stopping={"metric": "val_loss", "patience": 2, "min_delta": 0.5})
    trainer, rows = fit(r)
    assert trainer.progress.step == 3  # no eval improves by 0.5: stops after patience evaluations


def test_an_empty_training_split_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer blocks than one batch"):
        Trainer(recipe(), get_spec("lm"), INFO, echo=None).fit(lambda e: iter([]), lambda: iter(VAL))


def test_run_dir_of_another_model_or_data_fails_before_training(tmp_path):
    from lmstack.config import RecipeError
    from lmstack.train.trainer import check_resumable

    spec = get_spec("lm")
    raw = recipe().model_dump(mode="json")
    run_dir = str(tmp_path / "run")
    check_resumable(validate_recipe(raw, "a.yaml"), run_dir, spec)  # first start: records what it trains
    more_steps = {**raw, "train": {**raw["train"], "max_steps": 99, "num_workers": 2},
                  "data": {**raw["data"], "paths": ["moved/elsewhere"]}}
    check_resumable(validate_recipe(more_steps, "a.yaml"), run_dir, spec)  # same model and data: resumable
    wider = {**raw, "model": {**raw["model"], "n_embd": 32}}
    with pytest.raises(RecipeError, match=r"run holds a run whose model section\(s\) differ"):
        check_resumable(validate_recipe(wider, "a.yaml"), run_dir, spec)
    longer_blocks = {**raw, "data": {**raw["data"], "block_size": 256}}
    with pytest.raises(RecipeError, match=r"whose data section\(s\) differ"):
        check_resumable(validate_recipe(longer_blocks, "a.yaml"), run_dir, spec)
