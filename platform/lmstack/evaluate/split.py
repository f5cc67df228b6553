"""`lmstack evaluate RECIPE`: an exported model scored on the recipe's prepared validation split with
its task's own loss and metrics (the same code the trainer validates with)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from lmstack import runtime
from lmstack.artifacts import storage_path
from lmstack.config import Recipe
from lmstack.tasks import get_spec
from lmstack.tracking.finish import finish_evaluate
from lmstack.train.prepared import ensure_prepared


def evaluate(recipe: Recipe, model_dir: str | None = None, run_dir: str | None = None,
             max_batches: int | None = None, log=print) -> dict[str, Any]:
    started = time.time()
    spec = get_spec(recipe.task)
    info = ensure_prepared(recipe, spec, log=log)
    model_dir = model_dir or runtime.join(storage_path(recipe), "model")
    run_dir = run_dir or runtime.join(storage_path(recipe), "evaluate")
    model = spec.load_exported(model_dir).eval()
    runtime.connect()
    torch.set_num_threads(recipe.train.threads_per_worker or torch.get_num_threads())
    loss_sum, count, counts = 0.0, 0, None
    with torch.no_grad():
        batches = spec.datasets(recipe)["val"].iter_torch_batches(batch_size=recipe.train.batch_size)
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            loss, n = spec.loss(model, batch)
            loss_sum += float(loss) * n
            count += n
            c = spec.eval_counts(model, batch)
            if c is not None:
                counts = np.asarray(c, dtype=np.float64) + (0 if counts is None else counts)
    metrics = {**spec.metrics(loss_sum, count, info, counts=counts), "items": count, "model_dir": model_dir}
    runtime.write_json(runtime.join(run_dir, "metrics.json"), metrics)
    summary = runtime.write_summary(run_dir, "evaluate", metrics, started)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val_") and isinstance(v, float))
    log(f"evaluated {model_dir}: {shown}")
    finish_evaluate(recipe, run_dir, log=log)
    return summary
