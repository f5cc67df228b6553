"""`train.in_process: true`: the same Trainer in this process, without Ray Train's controller and worker group.

For a notebook, a debugger, and tests whose subject is a task rather than Ray Train: one worker, the data
still read through Ray Data on the cluster. Checkpoints are kept as Ray Train keeps them (the best K by the
task's metric, and the latest for resume), under `RUN_DIR/in_process/`, each published in one rename so a
crash never leaves a half-written one; a rerun with the same run dir resumes from the latest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from lmstack import runtime
from lmstack.config import Recipe, RecipeError
from lmstack.train.distill_task import spec_for
from lmstack.train.loop import MetricsLog, Trainer

CHECKPOINTS = "in_process"
INDEX = "checkpoints.json"


@dataclass
class Kept:
    """One checkpoint on disk and the metrics reported with it."""

    path: str
    metrics: dict[str, Any]


@dataclass
class LocalResult:
    """What `train()` needs from a fit, in the shape of Ray Train's Result."""

    metrics: dict[str, Any] = field(default_factory=dict)  # the last report
    kept: list[Kept] = field(default_factory=list)  # oldest first

    @property
    def latest(self) -> Kept | None:
        return self.kept[-1] if self.kept else None

    def best(self, metric: str, mode: str) -> Kept | None:
        scored = [k for k in self.kept if isinstance(k.metrics.get(metric), (int, float))]
        if not scored:
            return self.latest
        return (min if mode == "min" else max)(scored, key=lambda k: k.metrics[metric])


def check_in_process(recipe: Recipe) -> None:
    cfg = recipe.train
    if runtime.is_uri(recipe.resolved_run_dir()):
        raise RecipeError(f"{recipe.name}: train.in_process keeps checkpoints on local disk; run_dir "
                          f"{recipe.resolved_run_dir()!r} is a URI (train on the cluster instead)")
    if cfg.num_workers != 1 or cfg.strategy != "ddp":
        raise RecipeError(f"{recipe.name}: train.in_process runs one worker: set train.num_workers=1 "
                          f"(it is {cfg.num_workers}) and no fsdp")


class CheckpointKeeper:
    """The best `keep` checkpoints by the task's metric plus the latest, listed in an index file that is
    replaced atomically after each new checkpoint is in place."""

    def __init__(self, root: str, keep: int, metric: str, mode: str):
        self.root, self.keep, self.metric, self.mode = root, keep, metric, mode
        os.makedirs(root, exist_ok=True)
        self.result = LocalResult()
        index = os.path.join(root, INDEX)
        if os.path.exists(index):
            with open(index, encoding="utf-8") as f:
                self.result.kept = [Kept(**k) for k in json.load(f)]

    def add(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        final = os.path.join(self.root, f"checkpoint_{metrics['step']:08d}")
        staged = tempfile.mkdtemp(prefix=".staging-", dir=self.root)
        trainer.save(staged)
        if os.path.exists(final):  # a rerun reached the same step again: the new one wins
            shutil.rmtree(final)
        os.replace(staged, final)
        self.result.kept = [k for k in self.result.kept if k.path != final] + [Kept(final, metrics)]
        self._prune()
        self._write_index()

    def _prune(self) -> None:
        # As Ray Train does: the best `keep` by the metric stay, and the latest always (for resume).
        latest = self.result.latest
        ranked = sorted(self.result.kept, key=self._score)
        stay = {k.path for k in ranked[: self.keep]} | ({latest.path} if latest else set())
        for k in self.result.kept:
            if k.path not in stay:
                shutil.rmtree(k.path, ignore_errors=True)
        self.result.kept = [k for k in self.result.kept if k.path in stay]

    def _score(self, kept: Kept) -> float:
        value = kept.metrics.get(self.metric)
        if not isinstance(value, (int, float)):
            return float("inf")  # a report without the metric ranks last
        return value if self.mode == "min" else -value

    def _write_index(self) -> None:
        tmp = os.path.join(self.root, INDEX + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump([{"path": k.path, "metrics": k.metrics} for k in self.result.kept], f, default=str)
        os.replace(tmp, os.path.join(self.root, INDEX))


class Stopped(Exception):
    """Raised from a report when the caller asked the run to stop (a Tune scheduler stopping a trial)."""


def fit_in_process(recipe: Recipe, info: dict[str, Any], run_dir: str, *, name: str = CHECKPOINTS,
                   init_checkpoint: str | None = None,
                   on_report: Callable[[dict[str, Any], str | None], None] | None = None,
                   stop: threading.Event | None = None) -> LocalResult:
    """Train `recipe` here; resume from the latest checkpoint kept under `run_dir/name` when there is one,
    else start from `init_checkpoint` when given (a PBT donor). `on_report(metrics, checkpoint or None)`
    sees every evaluation (a Tune trial relays them); setting `stop` ends the run at the next one."""
    cfg = recipe.train
    spec = spec_for(recipe)
    metric, mode = spec.select_metric
    torch.set_num_threads(cfg.threads_per_worker or max(1, int(cfg.cpus_per_worker)))
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    # echo=None: the driver prints metrics.jsonl's rows (lmstack.train.progress.follow), once.
    trainer = Trainer(recipe, spec, info, device=device, metrics_log=MetricsLog(run_dir, []), echo=None)
    keeper = CheckpointKeeper(os.path.join(run_dir, name), cfg.keep_checkpoints, metric, mode)
    resume_from = keeper.result.latest.path if keeper.result.latest is not None else init_checkpoint
    if resume_from is not None:
        trainer.resume(resume_from)
    splits = spec.datasets(recipe)

    def train_batches(epoch: int):
        return splits["train"].iter_torch_batches(
            batch_size=cfg.batch_size, drop_last=True, device=trainer.device,
            local_shuffle_buffer_size=max(64 * cfg.batch_size, 1024), local_shuffle_seed=cfg.seed + epoch)

    def val_batches():
        return splits["val"].iter_torch_batches(batch_size=cfg.batch_size, device=trainer.device)

    def report(metrics: dict[str, Any], save: bool) -> None:
        keeper.result.metrics = metrics
        if save:
            keeper.add(trainer, metrics)
        if on_report is not None:
            on_report(metrics, keeper.result.latest.path if save else None)
        if stop is not None and stop.is_set():
            raise Stopped

    try:
        trainer.fit(train_batches, val_batches, report)
    except Stopped:
        pass
    return keeper.result
