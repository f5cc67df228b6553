"""Recommendations and evaluation from an exported model directory (what predict, evaluate and serving
share): the weights, recommend_config.json and items.json (the item vocabulary, training counts for the
popularity fallback, the input columns and the evaluation protocol)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import torch

from lmstack.config import RecipeError
from lmstack.data.read import DataSourceError
from lmstack.tasks.recommend import metrics as M
from lmstack.tasks.recommend.data import Columns, read_sequences
from lmstack.tasks.recommend.model import SequenceRecommender, load

ITEMS_FILE = "items.json"


class Recommender:
    """An exported model ready to rank: item strings in, (item, score) lists out."""

    def __init__(self, model_dir: str) -> None:
        self.model: SequenceRecommender = load(model_dir)
        path = os.path.join(model_dir, ITEMS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: an exported recommend model carries its item vocabulary")
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        self.items: list[str] = meta["items"]
        self.index = {item: i for i, item in enumerate(self.items) if i >= M.FIRST_ITEM}
        counts = torch.tensor(meta["counts"], dtype=torch.float64)
        self.popularity = counts.clone()
        self.popularity[: M.FIRST_ITEM] = -np.inf
        self.columns = Columns(**meta["columns"])
        self.eval = meta["eval"]
        self.max_len = self.model.max_len
        self.num_items = len(self.items)

    def encode(self, history: list[str]) -> tuple[list[int], int]:
        """Known item ids in order, and how many items were unknown (ignored)."""
        ids = [self.index.get(str(item), M.UNK) for item in history]
        known = [i for i in ids if i != M.UNK]
        return known, len(ids) - len(known)

    def scores(self, histories: list[list[int]]) -> torch.Tensor:
        """[B, V] next-item scores; an empty history gets the popularity fallback; padding and the
        unknown id score -inf."""
        out = self.popularity.to(torch.float32).repeat(len(histories), 1)
        rows = [i for i, h in enumerate(histories) if h]
        if rows:
            window = torch.zeros(len(rows), self.max_len, dtype=torch.long)
            for r, i in enumerate(rows):
                h = histories[i][-self.max_len:]
                window[r, self.max_len - len(h):] = torch.tensor(h)
            with torch.no_grad():
                s = self.model.score_all(window).float()
            s[:, : M.FIRST_ITEM] = -torch.inf
            out[rows] = s
        return out

    def recommend(self, histories: list[list[str]], k: int = 10, exclude_seen: bool = True) -> list[dict[str, Any]]:
        """Top-k items per history: {"data": [{"item", "score"}], "unknown_items", "fallback"}."""
        encoded = [self.encode(h) for h in histories]
        scores = self.scores([ids for ids, _ in encoded])
        if exclude_seen:
            for row, (ids, _) in enumerate(encoded):
                if ids:
                    scores[row, torch.tensor(ids)] = -torch.inf
        top = scores.topk(min(k, self.num_items - M.FIRST_ITEM), dim=1)
        out = []
        for row, (ids, unknown) in enumerate(encoded):
            pairs = [(self.items[int(i)], float(s)) for s, i in zip(top.values[row], top.indices[row], strict=True)
                     if s > -torch.inf]
            out.append({"data": [{"item": i, "score": round(s, 6)} for i, s in pairs], "unknown_items": unknown,
                        "fallback": not ids})
        return out


def rank_targets(rec: Recommender, rows: list[tuple[str, list[int], int]], num_negatives: int, seed: int,
                 batch_size: int = 256) -> dict[str, np.ndarray]:
    """rows = (user, history ids, target id or UNK) -> per-row sampled and full-ranking ranks (0-based;
    an unknown target ranks last)."""
    sampled, full = np.empty(len(rows), dtype=np.int64), np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        scores = rec.scores([h for _, h, _ in chunk])
        targets = torch.tensor([max(t, M.FIRST_ITEM) for _, _, t in chunk])
        cands = torch.tensor([
            [max(t, M.FIRST_ITEM)] + M.sample_negatives(u, [*h, t], rec.num_items, num_negatives, seed)
            for u, h, t in chunk])
        s_rank = M.sampled_rank(scores.gather(1, cands))
        width = max(1, max(len(h) for _, h, _ in chunk))
        hist = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (_, h, _) in enumerate(chunk):
            hist[r, : len(h)] = torch.tensor(h, dtype=torch.long)
        f_rank = M.full_rank(scores, targets, hist)
        unknown = torch.tensor([t == M.UNK for _, _, t in chunk])
        s_rank[unknown] = num_negatives
        f_rank[unknown] = rec.num_items
        sampled[start:start + len(chunk)] = s_rank.numpy()
        full[start:start + len(chunk)] = f_rank.numpy()
    return {"sampled": sampled, "full": full}


def evaluate_file(model_dir: str, path: str, targets: str | None = None, k: int | None = None,
                  num_negatives: int | None = None, eval_seed: int | None = None, **_: Any) -> dict[str, Any]:
    """HR@k / NDCG@k of the targets (`user item` lines), each ranked with that user's interactions in
    `path` as history: among sampled never-interacted items (the SASRec protocol) and over every item."""
    if not targets:
        raise RecipeError("recommend: evaluate needs --targets FILE (`user item` lines, one target each) "
                         "beside --data INTERACTIONS")
    for p in (path, targets):
        if not os.path.exists(p):
            raise DataSourceError(f"{p} does not exist")
    started = time.time()
    rec = Recommender(model_dir)
    k = k or 10
    n_neg = num_negatives or rec.eval["num_negatives"]
    seed = rec.eval["seed"] if eval_seed is None else eval_seed
    history, rejected = read_sequences(path, "auto", rec.columns)
    target_rows, target_rejected = _target_rows(targets, rec.columns)
    rows, unknown_history, fallback, unknown_targets = [], 0, 0, 0
    for user, item in target_rows:
        ids, unknown = rec.encode(history.get(user, []))
        unknown_history += unknown
        fallback += not ids
        target = rec.index.get(item, M.UNK)
        unknown_targets += target == M.UNK
        rows.append((user, ids, target))
    if not rows:
        raise DataSourceError(f"{targets}: no usable `user item` target line ({target_rejected})")
    ranks = rank_targets(rec, rows, n_neg, seed)
    out: dict[str, Any] = {}
    for name, prefix in (("sampled", ""), ("full", "full_")):
        hit, ndcg = M.hits_and_ndcg(torch.from_numpy(ranks[name]), k)
        out[f"{prefix}hr@{k}"] = round(float(hit.mean()), 6)
        out[f"{prefix}ndcg@{k}"] = round(float(ndcg.mean()), 6)
    return {
        **out,
        "users": len(rows),
        "fallback_users": fallback,
        "unknown_targets": unknown_targets,
        "unknown_history_items": unknown_history,
        "num_negatives": n_neg,
        "seed": seed,
        "rejected": {"interactions": rejected, "targets": target_rejected},
        "seconds": round(time.time() - started, 2),
    }


def _target_rows(path: str, columns: Columns) -> tuple[list[tuple[str, str]], dict[str, int]]:
    from lmstack.tasks.recommend.data import read_file

    rows, rejected = [], {}
    for r in read_file(path, "auto", Columns(columns.user, columns.item, None)):
        if r["reject"]:
            rejected[r["reject"]] = rejected.get(r["reject"], 0) + 1
        else:
            rows.append((r["user"], r["item"]))
    return rows, rejected


def predict(model_dir: str, inputs: list[str], k: int | None = None, include_seen: bool | None = None,
            **_: Any) -> list[dict[str, Any]]:
    """Each input is a history: item ids separated by spaces (oldest first)."""
    rec = Recommender(model_dir)
    histories = [text.split() for text in inputs]
    out = rec.recommend(histories, k=k or 10, exclude_seen=not include_seen)
    return [{"history": h, **o} for h, o in zip(histories, out, strict=True)]
