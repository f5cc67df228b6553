"""Sequential recommendation on the task contract.

Training rows are each user's training prefix (inputs = seq[:-1], positives = seq[1:], left-padded);
every position predicts its next item against sampled negatives (BCE, as SASRec) or a sampled softmax.
Validation rows are the history up to the validation target with the SASRec protocol's candidates
([target] + 100 sampled never-interacted items, fixed seed): eval_counts sums hits and NDCG per batch,
metrics() divides, and the exported checkpoint is the one with the best val_ndcg@10.
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.tasks.recommend import metrics as M
from lmstack.tasks.recommend.config import RecommendConfig
from lmstack.tasks.spec import TaskSpec

K = 10  # the cut-off of the validation metrics (the SASRec protocol's HR@10 / NDCG@10)


def _core(model: torch.nn.Module) -> Any:
    return getattr(model, "module", model)


def trim(batch: dict[str, torch.Tensor], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop the leading columns that are padding in every row (rows are left-padded to max_len and
    positions are explicit or right-aligned, so the result is the same, for less compute)."""
    used = (batch["input_ids"] != M.PAD).any(0).nonzero()
    start = int(used[0]) if len(used) else batch["input_ids"].shape[1] - 1
    return {k: batch[k][:, start:] for k in keys if k in batch}


def train_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], kind: str, num_negatives: int
               ) -> tuple[torch.Tensor, int]:
    """Next-item loss at every non-padding position of the (packed) training rows."""
    core = _core(model)
    batch = trim(batch, ("input_ids", "pos", "seg", "positions"))
    h = model(batch["input_ids"], batch.get("seg"), batch.get("positions"))  # through DDP, so gradients sync
    pos = batch["pos"].long()
    valid = pos != M.PAD
    hv, p = h[valid], pos[valid]  # [N, d], [N]
    n = int(p.numel())
    if n == 0:
        return h.sum() * 0.0, 0
    pos_logit = core.score(hv, p.unsqueeze(1)).squeeze(1)
    if kind == "bce":
        neg = torch.randint(M.FIRST_ITEM, core.num_items, (n, num_negatives), device=p.device)
        neg_logit = core.score(hv, neg)
        loss = F.softplus(-pos_logit) + F.softplus(neg_logit).masked_fill(neg == p.unsqueeze(1), 0.0).sum(-1)
        return loss.mean(), n
    neg = torch.randint(M.FIRST_ITEM, core.num_items, (num_negatives,), device=p.device)
    neg_logit = core.score(hv, neg).masked_fill(neg.unsqueeze(0) == p.unsqueeze(1), -torch.inf)
    logits = torch.cat([pos_logit.unsqueeze(1), neg_logit], 1).float()
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=p.device)), n


def candidate_scores(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, 1 + n] scores of each validation row's candidates (column 0 is the target)."""
    h = model(trim(batch, ("input_ids",))["input_ids"])[:, -1]
    return _core(model).score(h, batch["candidates"].long()).float()


class RecommendSpec(TaskSpec):
    name = "recommend"
    section = "recommend"
    section_model = RecommendConfig
    reported_metrics: ClassVar[tuple[str, ...]] = ("val_loss", f"val_hr@{K}", f"val_ndcg@{K}")
    select_metric: ClassVar[tuple[str, str]] = (f"val_ndcg@{K}", "max")
    resume_sections: ClassVar[tuple[str, ...]] = ("recommend",)

    def __init__(self) -> None:
        self.loss_kind, self.num_negatives = "sampled_softmax", 256  # set from the recipe by build_model
        self._scored: tuple[torch.Tensor, torch.nn.Module, torch.Tensor] | None = None

    # -- data -----------------------------------------------------------------------------------
    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        from lmstack.tasks.recommend.prepare import prepare

        return prepare(recipe, self.prepare_hash(recipe), log=log)

    def prepare_hash(self, recipe: Recipe) -> str:
        # The model kind and loss do not change the prepared data; columns, lengths and the protocol do.
        dumped = recipe.recommend.model_dump(include={"user_column", "item_column", "time_column",
                                                      "min_interactions", "max_len", "val_holdout", "eval"})
        return recipe.fingerprint("data") + ":" + _digest(dumped)

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        import ray.data

        data_dir = recipe.data_dir()
        return {
            "train": ray.data.read_parquet(runtime.join(data_dir, "train"),
                                           columns=["input_ids", "pos", "seg", "positions"]),
            "val": ray.data.read_parquet(runtime.join(data_dir, "val"), columns=["input_ids", "candidates"]),
        }

    # -- model and training ---------------------------------------------------------------------
    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        from lmstack.tasks.recommend.model import build

        cfg = recipe.recommend
        self.loss_kind, self.num_negatives = cfg.loss, cfg.negatives()
        m = recipe.model
        config: dict[str, Any] = {"arch": cfg.arch, "num_items": info["num_items"], "d": m.n_embd,
                                  "max_len": info["max_len"]}
        if cfg.arch == "sasrec":
            config.update(n_layer=m.n_layer, n_head=m.n_head, dropout=m.dropout, ffn=m.intermediate_size or m.n_embd)
        elif cfg.arch == "gru4rec":
            config.update(n_layer=m.n_layer, dropout=m.dropout)
        counts = None
        if cfg.arch == "popularity":
            counts = _items_meta(info["vocab"])["counts"]
        return build(config, counts=counts)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        if "candidates" in batch:  # validation: cross-entropy of the target among its candidates
            scores = self._candidate_scores(model, batch)
            zeros = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
            return F.cross_entropy(scores, zeros), int(scores.shape[0])
        return train_loss(model, batch, self.loss_kind, self.num_negatives)

    def _candidate_scores(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # The loop calls loss() then eval_counts() on the same validation batch: score it once.
        cached = self._scored
        if cached is not None and cached[0] is batch["candidates"] and cached[1] is model and not model.training:
            return cached[2]
        scores = candidate_scores(model, batch)
        self._scored = (batch["candidates"], model, scores) if not model.training else None
        return scores

    def eval_counts(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
        hit, ndcg = M.hits_and_ndcg(M.sampled_rank(self._candidate_scores(model, batch)), K)
        return np.array([float(hit.sum()), float(ndcg.sum()), float(hit.numel())])

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any],
                counts: np.ndarray | None = None) -> dict[str, float]:
        out = {"val_loss": loss_sum / max(count, 1)}
        if counts is not None and len(counts) >= 3:
            out.update(M.summarize(np.asarray(counts), K, prefix="val_"))
        return out

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["input_ids"] != M.PAD).sum())

    # -- export ---------------------------------------------------------------------------------
    def export(self, model: torch.nn.Module, out_dir: str) -> None:
        from lmstack.tasks.recommend.model import save

        save(_core(model), out_dir)

    def export_assets(self, info: dict[str, Any], out_dir: str) -> None:
        from lmstack.tasks.recommend.predict import ITEMS_FILE

        with runtime.local_dir(os.path.dirname(info["vocab"])) as local:
            shutil.copyfile(os.path.join(local, os.path.basename(info["vocab"])), os.path.join(out_dir, ITEMS_FILE))

    def load_exported(self, model_dir: str) -> torch.nn.Module:
        from lmstack.tasks.recommend.model import load

        return load(model_dir)

    # -- inference ------------------------------------------------------------------------------
    def add_cli_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--targets", help="recommend evaluate: `user item` lines, one held-out target each")
        parser.add_argument("--k", type=int, help="recommend: items to return / HR@k and NDCG@k cut-off (10)")
        parser.add_argument("--num-negatives", type=int,
                            help="recommend evaluate: sampled negatives per target (default: the model's, 100)")
        parser.add_argument("--eval-seed", type=int, help="recommend evaluate: seed of the sampled negatives")
        parser.add_argument("--include-seen", action="store_const", const=True,
                            help="recommend predict: may recommend items already in the history")

    def predict(self, model_dir: str, inputs: list[str], **opts: Any) -> list[dict[str, Any]]:
        from lmstack.tasks.recommend.predict import predict

        return predict(model_dir, inputs, **opts)

    def evaluate_file(self, model_dir: str, path: str, **opts: Any) -> dict[str, Any]:
        from lmstack.tasks.recommend.predict import evaluate_file

        return evaluate_file(model_dir, path, **opts)

    def serving(self) -> Any:
        from lmstack.tasks.recommend.serve import SERVING

        return SERVING


def _digest(obj: Any) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _items_meta(path: str) -> dict[str, Any]:
    return runtime.read_json(path)
