"""Causal language modelling: next-token loss, perplexity and bits per byte."""

from __future__ import annotations

import math
from typing import Any

import torch

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.models import build_causal_lm


class LanguageModeling:
    name = "lm"

    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        from lmstack.data.prepare import prepare

        return prepare(recipe, log=log)

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        import ray.data

        data_dir = recipe.data_dir()
        return {split: ray.data.read_parquet(runtime.join(data_dir, split)) for split in ("train", "val")}

    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        return build_causal_lm(recipe.model, info["tokenizer"]["vocab_size"], info["block_size"], info["eos_id"])

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        ids = batch["input_ids"].long()
        out = model(input_ids=ids, labels=ids)
        return out.loss, ids.shape[0] * (ids.shape[1] - 1)

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any]) -> dict[str, float]:
        loss = loss_sum / max(count, 1)
        # Bits per byte: nats/token -> bits/token -> bits/byte, so tokenizers compare.
        bpb = loss / math.log(2) / info["bytes_per_token_val"]
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_bpb": bpb}
