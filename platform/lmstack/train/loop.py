"""The per-worker training loop run by Ray Train's TorchTrainer; generic over tasks."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
import time
from typing import Any

import numpy as np
import torch

from lmstack import runtime
from lmstack.config import Recipe, TrainConfig
from lmstack.tasks import task_for
from lmstack.train import checkpoint as ckpt
from lmstack.train.schedule import lr_at


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    # No weight decay on biases and norms (GPT-2/nanoGPT practice); frozen parameters stay out.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(groups: list[dict[str, Any]], cfg: TrainConfig, fused_ok: bool) -> torch.optim.Optimizer:
    # A group may carry "lr_scale" (layer-wise decay); LambdaLR multiplies each group's initial lr.
    for g in groups:
        g["lr"] = cfg.lr * g.pop("lr_scale", 1.0)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused_ok or None)


def _all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t.tolist()


def _all_reduce_max(value: int, device: torch.device) -> int:
    t = torch.tensor([value], dtype=torch.int64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    recipe = Recipe.model_validate(config["recipe"])
    info: dict[str, Any] = config["data_info"]
    cfg = recipe.train
    task = task_for(recipe)  # the recipe's task, or distillation wrapping it
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads_per_worker or max(1, int(cfg.cpus_per_worker)))
    _seed_everything(cfg.seed)  # same init on every rank; DDP also broadcasts rank 0's weights

    device = ray.train.torch.get_device()
    model = task.build_model(recipe, info)
    model = ray.train.torch.prepare_model(model)
    core = getattr(model, "module", model)
    param_groups = getattr(task, "param_groups", None)
    groups = param_groups(core, recipe) if param_groups else default_param_groups(core, cfg)
    optimizer = _optimizer(groups, cfg, fused_ok=device.type == "cuda")
    total = cfg.max_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, cfg.lr, cfg.min_lr, cfg.warmup_steps, total) / cfg.lr
    )

    progress = ckpt.Progress()
    resumed = ray.train.get_checkpoint()
    if resumed is None and config.get("init_checkpoint"):  # a PBT exploit (lmstack.tune) starts from a donor
        resumed = ray.train.Checkpoint(config["init_checkpoint"])
    if resumed is not None:
        with resumed.as_directory() as path:
            progress = ckpt.load(path, core, optimizer, scheduler)
    _seed_everything(cfg.seed + 1000 * rank + progress.step)  # dropout streams differ per rank

    log = MetricsLog(config["run_dir"], progress.history) if rank == 0 else None
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    ckpt_every = cfg.checkpoint_every or cfg.eval_every
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")

    eval_counts = getattr(task, "eval_counts", None)
    export = getattr(task, "export_model", None)

    def evaluate() -> dict[str, float]:
        model.eval()
        loss_sum, count = 0.0, 0
        counts = None  # optional task hook eval_counts: per-batch count arrays, summed over batches and ranks
        with torch.no_grad(), autocast:
            for i, batch in enumerate(val_shard.iter_torch_batches(batch_size=cfg.batch_size, device=device)):
                if cfg.eval_batches is not None and i >= cfg.eval_batches:
                    break
                loss, n = task.loss(model, batch)
                loss_sum += float(loss) * n
                count += n
                if eval_counts is not None:
                    c = np.asarray(eval_counts(model, batch), dtype=np.float64)
                    counts = c if counts is None else counts + c
        model.train()
        loss_sum, count = _all_reduce_sum([loss_sum, count], device)
        if eval_counts is None:
            return task.metrics(loss_sum, int(count), info)
        size = _all_reduce_max(0 if counts is None else len(counts), device)  # a rank may have had no batch
        summed = _all_reduce_sum(list(counts) if counts is not None else [0.0] * size, device)
        return task.metrics(loss_sum, int(count), info, counts=np.asarray(summed))

    def report(metrics: dict[str, Any], save: bool) -> None:
        progress.history = log.rows if log is not None else []
        if save and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                ckpt.save(tmp, core, optimizer, scheduler, progress, export=export)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    tokens_per_step = 0
    window_start, window_tokens = time.perf_counter(), 0
    stop = progress.step >= total
    model.train()
    while not stop:
        batches = train_shard.iter_torch_batches(
            batch_size=cfg.batch_size,
            drop_last=True,
            device=device,
            local_shuffle_buffer_size=max(64 * cfg.batch_size, 1024),
            local_shuffle_seed=cfg.seed + progress.epoch,
        )
        micro = 0
        seen_any = False
        for i, batch in enumerate(batches):
            seen_any = True
            if i < progress.batches_in_epoch:  # resuming mid-epoch: skip what was consumed
                continue
            last_micro = micro == cfg.grad_accum - 1
            sync = model.no_sync() if (world > 1 and not last_micro) else contextlib.nullcontext()
            with sync, autocast:
                loss, _ = task.loss(model, batch)
                (loss / cfg.grad_accum).backward()
            tokens_per_step += batch["input_ids"].numel() * world if "input_ids" in batch else 0
            progress.batches_in_epoch = i + 1
            micro += 1
            if not last_micro:
                continue
            micro = 0
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            tokens_per_step = 0
            step = progress.step

            row: dict[str, Any] = {}
            if step % cfg.log_every == 0 or step == total:
                elapsed = time.perf_counter() - window_start
                row.update(
                    step=step,
                    train_loss=loss.item(),
                    lr=scheduler.get_last_lr()[0],
                    tokens_per_s=window_tokens / max(elapsed, 1e-9),
                )
                window_start, window_tokens = time.perf_counter(), 0
            is_eval = step % cfg.eval_every == 0 or step == total
            if is_eval:
                metrics = evaluate()
                row.update(step=step, **metrics)
                stop = step >= total or _early_stop(cfg, progress, metrics)
            if row and log is not None:
                log.add({"epoch": progress.epoch, "tokens_seen": progress.tokens_seen, **row})
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
            if is_eval:
                save = step % ckpt_every == 0 or stop
                report({"step": step, "epoch": progress.epoch, **metrics}, save)
            if stop:
                break
        if not seen_any:
            raise ValueError("the training split has fewer blocks than one batch per worker")
        if not stop:
            progress.epoch += 1
            progress.batches_in_epoch = 0


def _early_stop(cfg: TrainConfig, progress: ckpt.Progress, metrics: dict[str, float]) -> bool:
    es = cfg.early_stopping
    if es is None:
        return False
    value = metrics.get(es.metric)
    if value is None or math.isnan(value):
        return False
    if progress.best_metric is None or value < progress.best_metric - es.min_delta:
        progress.best_metric = value
        progress.evals_without_improvement = 0
        return False
    progress.evals_without_improvement += 1
    return progress.evals_without_improvement >= es.patience
