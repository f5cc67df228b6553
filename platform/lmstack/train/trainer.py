"""`lmstack train`: TorchTrainer over the prepared shards, resume, export, summary."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import pyarrow.fs as pafs

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.tasks import get_task
from lmstack.train.checkpoint import MODEL_DIR
from lmstack.train.loop import train_loop_per_worker

MODEL_MANIFEST = "lmstack_model.json"


def storage_path(recipe: Recipe) -> str:
    run_dir = recipe.resolved_run_dir()
    return run_dir if runtime.is_uri(run_dir) else os.path.abspath(run_dir)


RESUME_KEY = "resume_key.json"
# What a checkpoint's tensors depend on. Other sections (workers, steps, lr, data paths) may change
# between a run and its resumption.
RESUME_SECTIONS = ("task", "model", "tokenizer", "finetune", "distill", "translate")


def check_resumable(recipe: Recipe, run_dir: str) -> None:
    """Fail before any cluster work when run_dir holds a run of a different model than `recipe`'s
    (resuming it would fail deep in a worker with a tensor shape mismatch, or silently mix models)."""
    path = runtime.join(run_dir, RESUME_KEY)
    key = recipe.fingerprint(*RESUME_SECTIONS)
    if runtime.exists(path):
        stored = runtime.read_json(path)
        if stored.get("key") != key:
            changed = [s for s in RESUME_SECTIONS if stored.get("sections", {}).get(s) != recipe.fingerprint(s)]
            raise ValueError(
                f"{run_dir} holds a run of recipe {stored.get('recipe')!r} whose {', '.join(changed) or 'model'} "
                f"section(s) differ from this recipe's; a run resumes only with the same model: give another "
                f"--run-dir (or run_dir) or delete {run_dir}"
            )
        return
    runtime.write_json(path, {"recipe": recipe.name, "key": key,
                              "sections": {s: recipe.fingerprint(s) for s in RESUME_SECTIONS}})


def load_data_info(recipe: Recipe) -> dict[str, Any]:
    path = runtime.join(recipe.data_dir(), "manifest.json")
    if not runtime.exists(path):
        raise FileNotFoundError(f"{path} not found: run `lmstack prepare` for recipe {recipe.name!r} first")
    return runtime.read_json(path)


def build_trainer(recipe: Recipe, info: dict[str, Any], run_name: str = "train", callbacks=None):
    """The TorchTrainer for `recipe` (also used by the tuner, which adds callbacks)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = recipe.train
    run_dir = storage_path(recipe)
    task = get_task(recipe.task)
    metric, mode = getattr(task, "select_metric", ("val_loss", "min"))
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
        datasets={k: ds.materialize() for k, ds in task.datasets(recipe).items()},
    )


def export_model(checkpoint_dir: str, tokenizer_dir: str, dest: str, lineage: dict[str, Any]) -> str:
    """Copy the checkpoint's model and the tokenizer into one transformers directory."""
    fs, dest_path = runtime.filesystem(dest)
    if runtime.is_uri(dest):
        with tempfile.TemporaryDirectory() as tmp:
            staged = os.path.join(tmp, "model")
            _assemble(checkpoint_dir, tokenizer_dir, lineage, staged)
            pafs.copy_files(staged, dest_path, destination_filesystem=fs)
        return dest
    tmp = dest_path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _assemble(checkpoint_dir, tokenizer_dir, lineage, tmp)
    shutil.rmtree(dest_path, ignore_errors=True)
    os.replace(tmp, dest_path)  # readers never see a half-written model directory
    return dest_path


def _assemble(checkpoint_dir: str, tokenizer_dir: str, lineage: dict[str, Any], out: str) -> None:
    from lmstack.data.tokenizer import load_tokenizer

    shutil.copytree(os.path.join(checkpoint_dir, MODEL_DIR), out)
    with tempfile.TemporaryDirectory() as tmp:
        local_tok = tokenizer_dir
        if runtime.is_uri(tokenizer_dir):
            fs, p = runtime.filesystem(tokenizer_dir)
            pafs.copy_files(p, tmp, source_filesystem=fs)
            local_tok = tmp
        load_tokenizer(local_tok).save_pretrained(out)
    runtime.write_json(os.path.join(out, MODEL_MANIFEST), lineage)


def train(recipe: Recipe, log=print) -> dict[str, Any]:
    """Train (or resume) `recipe`; export the best kept checkpoint; write summary.json."""
    started = time.time()
    info = load_data_info(recipe)
    run_dir = storage_path(recipe)
    preflight = getattr(get_task(recipe.task), "preflight", None)
    # Before check_resumable writes the run dir's resume key: a refused model.path must not pin the
    # run dir to that model, or the corrected recipe would be refused as "a different model".
    if preflight is not None:
        preflight(recipe, info)
    runtime.makedirs(run_dir)
    check_resumable(recipe, run_dir)
    if info.get("recipe_hash") != recipe.fingerprint("data", "tokenizer"):
        log("note: the prepared data was made from a different data/tokenizer section than this recipe's")
    trainer = build_trainer(recipe, info)
    result = trainer.fit()
    if result.error:
        raise result.error
    metric, mode = getattr(get_task(recipe.task), "select_metric", ("val_loss", "min"))
    best = result.get_best_checkpoint(metric=metric, mode=mode) or result.checkpoint
    if best is None:
        raise RuntimeError(f"training of {recipe.name!r} produced no checkpoint")
    metrics = result.metrics or {}
    best_metrics = next((m for c, m in result.best_checkpoints if c.path == best.path), metrics)
    model_dir = runtime.join(run_dir, "model")
    lineage = {
        "task": recipe.task,
        "recipe": recipe.model_dump(mode="json"),
        "recipe_hash": recipe.fingerprint(),
        "data_manifest": runtime.join(recipe.data_dir(), "manifest.json"),
        "data_recipe_hash": info.get("recipe_hash"),
        "checkpoint": best.path,
        "metrics": best_metrics,
    }
    with best.as_directory() as path:
        export_model(path, info["tokenizer"]["dir"], model_dir, lineage)
    figures = {
        **{k: v for k, v in best_metrics.items() if k.startswith("val_")},
        "steps": metrics.get("step"),
        "best_step": best_metrics.get("step"),
        "model_dir": model_dir,
        "checkpoint": best.path,
    }
    summary = runtime.write_summary(run_dir, "train", figures, started)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if k.startswith("val_") and isinstance(v, float))
    log(f"trained {recipe.name}: {shown}; model in {model_dir}")
    return summary
