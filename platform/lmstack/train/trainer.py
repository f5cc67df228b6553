"""`lmstack train`: prepare when needed, TorchTrainer over the prepared shards, resume, export, summary."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from typing import Any

import pyarrow.fs as pafs

from lmstack import runtime
from lmstack.artifacts import MODEL_MANIFEST, storage_path
from lmstack.config import Recipe, RecipeError
from lmstack.tasks.spec import TaskSpec
from lmstack.tracking.finish import finish_run
from lmstack.train.checkpoint import MODEL_DIR
from lmstack.train.distill_task import spec_for
from lmstack.train.local import check_in_process, fit_in_process
from lmstack.train.prepared import ensure_prepared
from lmstack.train.progress import follow
from lmstack.train.worker import train_loop_per_worker

RESUME_KEY = "resume_key.json"
# Sections whose values shape a checkpoint's tensors for every task; a spec adds its own section and
# spec.resume_sections. Steps, lr, workers and where data lives may change between a run and its resumption.
GENERIC_RESUME_SECTIONS = ("task", "model", "tokenizer", "data", "finetune", "distill")
DATA_LOCATION_KEYS = ("paths", "output", "max_files", "max_bytes_per_file")


def resume_fingerprints(recipe: Recipe, spec: TaskSpec) -> dict[str, str]:
    sections = [*GENERIC_RESUME_SECTIONS, *([spec.section] if spec.section else []), *spec.resume_sections]
    dumped = recipe.model_dump(mode="json")
    dumped["data"] = {k: v for k, v in dumped["data"].items() if k not in DATA_LOCATION_KEYS}
    return {s: runtime.fingerprint(dumped.get(s)) for s in sections}


def check_resumable(recipe: Recipe, run_dir: str, spec: TaskSpec) -> None:
    """Fail before any cluster work when run_dir holds a run of a different model than `recipe`'s
    (resuming it would fail deep in a worker with a tensor shape mismatch, or silently mix models)."""
    path = runtime.join(run_dir, RESUME_KEY)
    ours = resume_fingerprints(recipe, spec)
    if runtime.exists(path):
        stored = runtime.read_json(path).get("sections", {})
        changed = [s for s in sorted(set(ours) | set(stored)) if stored.get(s) != ours.get(s)]
        if changed:
            raise RecipeError(
                f"{run_dir} holds a run whose {', '.join(changed)} section(s) differ from recipe "
                f"{recipe.name!r}'s; a run resumes only with the same model and data: give another "
                f"--run-dir (or run_dir) or delete {run_dir}"
            )
        return
    runtime.write_json(path, {"recipe": recipe.name, "sections": ours})


def build_trainer(recipe: Recipe, info: dict[str, Any], run_name: str = "train", callbacks=None):
    """The TorchTrainer for `recipe` (also used by the tuner, which adds callbacks)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = recipe.train
    run_dir = storage_path(recipe)
    spec = spec_for(recipe)
    metric, mode = spec.select_metric
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"recipe": recipe.model_dump(mode="json"), "data_info": info, "run_dir": run_dir},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=run_dir,
            # The best K by the task's metric stay on disk; Train also keeps the latest, for resume.
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks,
        ),
        # Read before the workers take their CPUs: on a small cluster, workers holding every CPU
        # would leave none for Ray Data's read tasks and the run would wait forever.
        datasets={k: ds.materialize() for k, ds in spec.datasets(recipe).items()},
    )


def export_model(checkpoint_dir: str, spec: TaskSpec, info: dict[str, Any], dest: str,
                 lineage: dict[str, Any]) -> str:
    """The checkpoint's model, the task's assets (tokenizer, vocabulary) and the lineage file, published
    in one step: readers never see a half-written model directory."""
    fs, dest_path = runtime.filesystem(dest)
    with tempfile.TemporaryDirectory() as tmp:
        staged = os.path.join(tmp, "model")
        shutil.copytree(os.path.join(checkpoint_dir, MODEL_DIR), staged)
        spec.export_assets(info, staged)
        with open(os.path.join(staged, MODEL_MANIFEST), "w", encoding="utf-8") as f:
            json.dump(lineage, f, indent=2, default=str)
        if runtime.is_uri(dest):
            # Object stores have no rename: clear the old export (no stale file mixed in), upload, and write
            # the lineage file last as the commit marker that loaders require.
            manifest = os.path.join(tmp, MODEL_MANIFEST)
            os.replace(os.path.join(staged, MODEL_MANIFEST), manifest)
            runtime.remove_dir(dest)
            pafs.copy_files(staged, dest_path, destination_filesystem=fs)
            runtime.write_text(runtime.join(dest, MODEL_MANIFEST), open(manifest, encoding="utf-8").read())
            return dest
        runtime.publish_dir(staged, dest_path)
    return dest_path


def check_metrics(recipe: Recipe, spec: TaskSpec) -> None:
    """An early-stopping metric the task never reports would never fire: refuse it up front."""
    es = recipe.train.early_stopping
    if es is not None and es.metric not in spec.reported_metrics:
        raise RecipeError(f"{recipe.name}: train.early_stopping.metric: task {recipe.task!r} reports "
                          f"{list(spec.reported_metrics)}, not {es.metric!r}")


def fit(recipe: Recipe, info: dict[str, Any], spec: TaskSpec, run_dir: str) -> tuple[Any, dict, dict]:
    """Run the training (Ray Train, or in this process with train.in_process); the best kept checkpoint by
    the task's metric (a local path, or Ray's Checkpoint, which knows its storage filesystem), its metrics,
    and the last reported metrics."""
    metric, mode = spec.select_metric
    if recipe.train.in_process:
        local = fit_in_process(recipe, info, run_dir)
        best = local.best(metric, mode)
        if best is None:
            raise RuntimeError(f"training of {recipe.name!r} produced no checkpoint")
        return best.path, best.metrics, local.metrics or best.metrics
    result = build_trainer(recipe, info).fit()
    if result.error:
        raise result.error
    checkpoint = result.get_best_checkpoint(metric=metric, mode=mode) or result.checkpoint
    if checkpoint is None:
        raise RuntimeError(f"training of {recipe.name!r} produced no checkpoint")
    metrics = result.metrics or {}
    best_metrics = next((m for c, m in result.best_checkpoints if c.path == checkpoint.path), metrics)
    return checkpoint, best_metrics, metrics


def train(recipe: Recipe, log=print, finish: bool = True) -> dict[str, Any]:
    """Train (or resume) `recipe`; export the best kept checkpoint; write summary.json (and, with `finish`,
    report.html and the MLflow run: finetune and distill finish the run themselves, after their summary)."""
    started = time.time()
    spec = spec_for(recipe)
    check_metrics(recipe, spec)
    if recipe.train.in_process:
        check_in_process(recipe)
    info = ensure_prepared(recipe, spec, log=log)
    run_dir = storage_path(recipe)
    # Before check_resumable writes the run dir's resume key: a refused model.path or teacher must not
    # pin the run dir to that model, or the corrected recipe would be refused as "a different model".
    spec.preflight(recipe, info)
    if recipe.distill is not None:
        spec.check_teacher(recipe, info, recipe.distill.teacher)
    runtime.makedirs(run_dir)
    check_resumable(recipe, run_dir, spec)
    runtime.connect()
    with follow(run_dir, recipe.train.max_steps, log):  # the driver prints rank 0's metrics.jsonl rows
        best, best_metrics, metrics = fit(recipe, info, spec, run_dir)
    best_path = best if isinstance(best, str) else best.path
    model_dir = runtime.join(run_dir, "model")
    lineage = {
        "task": recipe.task,
        "recipe": recipe.model_dump(mode="json"),
        "recipe_hash": recipe.fingerprint(),
        "data_manifest": runtime.join(recipe.data_dir(), "manifest.json"),
        "data_recipe_hash": info.get("recipe_hash"),
        "checkpoint": best_path,
        "metrics": best_metrics,
    }
    if isinstance(best, str):
        export_model(best, spec, info, model_dir, lineage)
    else:
        with best.as_directory() as path:
            export_model(path, spec, info, model_dir, lineage)
    figures = {
        **{k: v for k, v in best_metrics.items() if k.startswith("val_")},
        "steps": metrics.get("step"),
        "best_step": best_metrics.get("step"),
        "model_dir": model_dir,
        "checkpoint": best_path,
    }
    summary = runtime.write_summary(run_dir, "train", figures, started)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if k.startswith("val_") and isinstance(v, float))
    log(f"trained {recipe.name}: {shown}; model in {model_dir}")
    if finish:
        finish_run(recipe, run_dir, log=log, verb="train")
    return summary
