"""Causal language modelling: next-token loss, perplexity and bits per byte."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.models import build_causal_lm, load_causal_lm
from lmstack.tasks.report import ReportPart, RunRecord
from lmstack.tasks.spec import TaskSpec


class LanguageModeling(TaskSpec):
    name = "lm"
    reported_metrics = ("val_loss", "val_ppl", "val_bpb")
    compress_kind: ClassVar[str | None] = "causal_lm"

    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        from lmstack.data.prepare import prepare

        return prepare(recipe, log=log, prepare_hash=self.prepare_hash(recipe))

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

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any],
                counts: np.ndarray | None = None) -> dict[str, float]:
        loss = loss_sum / max(count, 1)
        # Bits per byte: nats/token -> bits/token -> bits/byte, so tokenizers compare.
        bpb = loss / math.log(2) / info["bytes_per_token_val"]
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_bpb": bpb}

    def report_parts(self, run: RunRecord) -> list[ReportPart]:
        """The default curves and one sample from the exported model (fixed seed: a rebuilt report
        shows the same text)."""
        parts = super().report_parts(run)
        if run.model_dir and runtime.exists(run.model_dir):
            from lmstack.models.generate import generate

            gen = (run.recipe or {}).get("generate") or {}
            text = generate(run.model_dir, gen.get("prompt", "\n"), max_new_tokens=120, seed=0)
            parts.append(ReportPart("Sample", text=text, note="120 new tokens, temperature 0.8, top-k 50, seed 0"))
        return parts

    def load_exported(self, model_dir: str) -> torch.nn.Module:
        return load_causal_lm(model_dir, use_safetensors=True)

    def distill_logits(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        ids = batch["input_ids"].long()
        logits = model(input_ids=ids).logits[:, :-1]
        return logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)

    def check_teacher(self, recipe: Recipe, info: dict[str, Any], teacher_dir: str) -> None:
        from lmstack.models.teacher import check_same_tokenizer

        check_same_tokenizer(teacher_dir, info)

    def serving(self) -> Any:
        from lmstack.tasks.lm.serve import SERVING

        return SERVING
