"""One worker's training loop as a plain PyTorch object, generic over tasks.

`Trainer` knows nothing of Ray: it is handed a device, a model wrapper (DDP or not), batch iterables
and a report callback. The Ray Train adapter (lmstack.train.worker) supplies Ray's; unit tests call
`fit()` in process with lists of batches. Read `fit()` top to bottom: accumulate, step, log, evaluate,
report, stop.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from lmstack import runtime
from lmstack.config import Recipe, TrainConfig
from lmstack.tasks.spec import TaskSpec
from lmstack.train import checkpoint as ckpt
from lmstack.train.schedule import lr_at

Batch = dict[str, torch.Tensor]
Report = Callable[[dict[str, Any], bool], None]  # (metrics, save a checkpoint?)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig, fused: bool) -> torch.optim.Optimizer:
    # A group may carry "lr_scale" (layer-wise decay); LambdaLR multiplies each group's initial lr.
    for g in groups:
        g["lr"] = cfg.lr * g.pop("lr_scale", 1.0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused or None)


def _all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
        torch.distributed.all_reduce(t, op=reduce_op)
    return t.tolist()


class MetricsLog:
    """metrics.jsonl (rewritten whole, so it works on object stores too) and TensorBoard, rank 0 only."""

    def __init__(self, run_dir: str, history: list[dict[str, Any]]):
        self.path = runtime.join(run_dir, "metrics.jsonl")
        self.rows = list(history)
        self.tb = None
        if not runtime.is_uri(run_dir):
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])
            self.tb.flush()
        runtime.write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


def early_stop(cfg: TrainConfig, progress: ckpt.Progress, metrics: dict[str, float], mode: str = "min") -> bool:
    """Patience on `early_stopping.metric`; `mode` is the metric's direction (the task's, for its metric)."""
    es = cfg.early_stopping
    if es is None:
        return False
    value = metrics.get(es.metric)
    if value is None or math.isnan(value):
        return False
    score = value if mode == "min" else -value
    if progress.best_metric is None or score < progress.best_metric - es.min_delta:
        progress.best_metric = score
        progress.evals_without_improvement = 0
        return False
    progress.evals_without_improvement += 1
    return progress.evals_without_improvement >= es.patience


class Trainer:
    """Model, optimizer, schedule and progress of one worker; `fit()` runs to max_steps or early stop."""

    def __init__(self, recipe: Recipe, spec: TaskSpec, info: dict[str, Any], *, device: torch.device | None = None,
                 rank: int = 0, world: int = 1, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                 metrics_log: MetricsLog | None = None, echo: Callable[[str], None] | None = print):
        self.recipe, self.spec, self.info, self.cfg = recipe, spec, info, recipe.train
        self.device = device or torch.device("cpu")
        self.rank, self.world = rank, world
        seed_everything(self.cfg.seed)  # same init on every rank; DDP also broadcasts rank 0's weights
        model = spec.build_model(recipe, info).to(self.device)
        self.model = wrap(model) if wrap is not None else model
        self.core = getattr(self.model, "module", self.model)
        self.optimizer = build_optimizer(spec.param_groups(self.core, recipe), self.cfg,
                                         fused=self.device.type == "cuda")
        cfg = self.cfg
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_at(s, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps) / cfg.lr)
        self.progress = ckpt.Progress()
        self.log, self.echo = metrics_log, echo
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                         else contextlib.nullcontext())
        es = cfg.early_stopping
        self.es_mode = spec.select_metric[1] if es is not None and es.metric == spec.select_metric[0] else "min"

    # -- state ----------------------------------------------------------------------------------
    def resume(self, path: str) -> None:
        """Continue from a checkpoint directory written by save()."""
        self.progress = ckpt.load(path, self.core, self.optimizer, self.scheduler)
        if self.log is not None:
            self.log.rows = list(self.progress.history)

    def save(self, path: str) -> None:
        self.progress.history = self.log.rows if self.log is not None else []
        ckpt.save(path, self.core, self.optimizer, self.scheduler, self.progress, export=self.spec.export,
                  own_format=self.spec.exports_own_format)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, train_batches: Callable[[int], Iterable[Batch]], val_batches: Callable[[], Iterable[Batch]],
            report: Report | None = None) -> list[dict[str, Any]]:
        """Train until max_steps or early stopping. `train_batches(epoch)` yields one epoch's batches
        (the same order on a resume); `report(metrics, save)` is called after every evaluation."""
        cfg = self.cfg
        seed_everything(cfg.seed + 1000 * self.rank + self.progress.step)  # dropout streams differ per rank
        rows: list[dict[str, Any]] = []
        window = [time.perf_counter(), 0]  # start, items since
        stop = self.progress.step >= cfg.max_steps
        self.model.train()
        while not stop:
            micro, items, seen_any = 0, 0, False
            for i, batch in enumerate(train_batches(self.progress.epoch)):
                seen_any = True
                if i < self.progress.batches_in_epoch:  # resuming mid-epoch: skip what was consumed
                    continue
                micro += 1
                loss = self._backward(batch, last_micro=micro == cfg.grad_accum)
                items += self.spec.batch_tokens(batch) * self.world
                self.progress.batches_in_epoch = i + 1
                if micro < cfg.grad_accum:
                    continue
                self._step()
                self.progress.tokens_seen += items
                window[1] += items
                micro, items = 0, 0
                row, stop = self._after_step(loss, window, val_batches, report)
                if row:
                    rows.append(row)
                if stop:
                    break
            if not seen_any:
                raise ValueError("the training split has fewer blocks than one batch per worker")
            if micro:  # a partial accumulation at the epoch's end must not leak into the next step
                self.optimizer.zero_grad(set_to_none=True)
            if not stop:
                self.progress.epoch += 1
                self.progress.batches_in_epoch = 0
        return rows

    def _backward(self, batch: Batch, last_micro: bool) -> torch.Tensor:
        no_sync = self.world > 1 and not last_micro and hasattr(self.model, "no_sync")
        with (self.model.no_sync() if no_sync else contextlib.nullcontext()), self.autocast:
            loss, _ = self.spec.loss(self.model, batch)
            (loss / self.cfg.grad_accum).backward()
        return loss

    def _step(self) -> None:
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.step += 1

    def _after_step(self, loss: torch.Tensor, window: list[float], val_batches: Callable[[], Iterable[Batch]],
                    report: Report | None) -> tuple[dict[str, Any], bool]:
        cfg, step = self.cfg, self.progress.step
        row: dict[str, Any] = {}
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            elapsed = time.perf_counter() - window[0]
            row.update(step=step, train_loss=loss.item(), lr=self.scheduler.get_last_lr()[0],
                       tokens_per_s=window[1] / max(elapsed, 1e-9))
            window[0], window[1] = time.perf_counter(), 0
        stop = step >= cfg.max_steps
        is_eval = step % cfg.eval_every == 0 or stop
        if is_eval:
            metrics = self.evaluate(val_batches())
            row.update(step=step, **metrics)
            stop = stop or early_stop(cfg, self.progress, metrics, self.es_mode)
        if row and self.log is not None:
            self.log.add({"epoch": self.progress.epoch, "tokens_seen": self.progress.tokens_seen, **row})
            if self.echo is not None:
                self.echo(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
        if is_eval and report is not None:
            save = step % (cfg.checkpoint_every or cfg.eval_every) == 0 or stop
            report({"step": step, "epoch": self.progress.epoch, **metrics}, save)
        return row, stop

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """The task's validation metrics, summed over this worker's batches and every worker."""
        self.model.eval()
        loss_sum, count, counts = 0.0, 0, None
        with torch.no_grad(), self.autocast:
            for i, batch in enumerate(batches):
                if self.cfg.eval_batches is not None and i >= self.cfg.eval_batches:
                    break
                loss, n = self.spec.loss(self.model, batch)
                loss_sum += float(loss) * n
                count += n
                c = self.spec.eval_counts(self.model, batch)
                if c is not None:
                    c = np.asarray(c, dtype=np.float64)
                    counts = c if counts is None else counts + c
        self.model.train()
        loss_sum, count = _all_reduce([loss_sum, count], self.device)
        # A worker may have had no validation batch: agree on the counts' size before summing them.
        size = int(_all_reduce([0 if counts is None else len(counts)], self.device, op="max")[0])
        if size:
            counts = np.asarray(_all_reduce(list(counts) if counts is not None else [0.0] * size, self.device))
        return self.spec.metrics(loss_sum, int(count), self.info, counts=counts)
