"""Evaluate an exported causal LM on the prepared validation blocks: loss, perplexity, bits per byte."""

from __future__ import annotations

import time
from typing import Any

import torch

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.models import load_causal_lm
from lmstack.tasks import get_task


def evaluate(recipe: Recipe, model_dir: str | None = None, run_dir: str | None = None,
             max_batches: int | None = None, log=print) -> dict[str, Any]:
    started = time.time()
    from lmstack.train.trainer import load_data_info, storage_path

    info = load_data_info(recipe)
    model_dir = model_dir or runtime.join(storage_path(recipe), "model")
    run_dir = run_dir or runtime.join(storage_path(recipe), "evaluate")
    task = get_task(recipe.task)
    model = load_causal_lm(model_dir).eval()
    torch.set_num_threads(recipe.train.threads_per_worker or torch.get_num_threads())
    loss_sum, count = 0.0, 0
    with torch.no_grad():
        batches = task.datasets(recipe)["val"].iter_torch_batches(batch_size=recipe.train.batch_size)
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            loss, n = task.loss(model, batch)
            loss_sum += float(loss) * n
            count += n
    metrics = {**task.metrics(loss_sum, count, info), "tokens": count, "model_dir": model_dir}
    runtime.write_json(runtime.join(run_dir, "metrics.json"), metrics)
    summary = runtime.write_summary(run_dir, "evaluate", metrics, started)
    log(f"evaluated {model_dir}: val_loss {metrics['val_loss']:.4f}, bpb {metrics['val_bpb']:.3f}")
    return summary
