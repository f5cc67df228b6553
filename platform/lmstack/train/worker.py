"""The Ray Train adapter: what a TorchTrainer worker runs. It hands the plain `Trainer` Ray's pieces
(device, DDP wrapper, dataset shards, report/checkpoint calls) and nothing else."""

from __future__ import annotations

import tempfile
from typing import Any

from lmstack.config import Recipe
from lmstack.train.distill_task import spec_for
from lmstack.train.loop import MetricsLog, Trainer


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch

    recipe = Recipe.model_validate(config["recipe"])
    cfg = recipe.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.threads_per_worker or max(1, int(cfg.cpus_per_worker)))
    trainer = Trainer(
        recipe, spec_for(recipe), config["data_info"], device=ray.train.torch.get_device(), rank=rank,
        world=world, wrap=ray.train.torch.prepare_model,
        metrics_log=MetricsLog(config["run_dir"], []) if rank == 0 else None,
        echo=None,  # the driver prints metrics.jsonl's rows (lmstack.train.progress), once
    )
    resumed = ray.train.get_checkpoint()
    if resumed is None and config.get("init_checkpoint"):  # a PBT exploit (lmstack.tune) starts from a donor
        resumed = ray.train.Checkpoint(config["init_checkpoint"])
    if resumed is not None:
        with resumed.as_directory() as path:
            trainer.resume(path)

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")

    def train_batches(epoch: int):
        return train_shard.iter_torch_batches(
            batch_size=cfg.batch_size, drop_last=True, device=trainer.device,
            local_shuffle_buffer_size=max(64 * cfg.batch_size, 1024), local_shuffle_seed=cfg.seed + epoch)

    def val_batches():
        return val_shard.iter_torch_batches(batch_size=cfg.batch_size, device=trainer.device)

    def report(metrics: dict[str, Any], save: bool) -> None:
        if save and rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                trainer.save(tmp)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics, checkpoint=None)

    trainer.fit(train_batches, val_batches, report)
