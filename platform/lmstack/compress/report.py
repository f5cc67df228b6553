"""What a compression buys and costs: parameters, file size, CPU latency per batch, metric change."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from lmstack.compress.evaldata import EvalData, collate
from lmstack.compress.load import CLASSIFIER


def param_counts(model: torch.nn.Module) -> dict[str, int]:
    """Total and nonzero parameters, int8 weights included (they are not nn.Parameters)."""
    from torch.ao.nn.quantized.dynamic import Linear as QLinear

    total = nonzero = 0
    seen: set[int] = set()
    for m in model.modules():
        tensors = []
        if isinstance(m, QLinear):
            tensors.append(m.weight().dequantize())
            if m.bias() is not None:
                tensors.append(m.bias())
        else:
            for p in m.parameters(recurse=False):
                if id(p) not in seen:  # tied weights count once
                    seen.add(id(p))
                    tensors.append(p)
        for t in tensors:
            total += t.numel()
            nonzero += int(torch.count_nonzero(t))
    return {"params": total, "nonzero_params": nonzero}


def latency_batch(model: torch.nn.Module, data: EvalData | None, batch_size: int, seq_len: int,
                  pad_id: int) -> dict[str, torch.Tensor]:
    """The fixed batch every latency figure is timed on: the first rows of the data, else seeded random ids."""
    if data is not None and len(data.rows) >= batch_size:
        return collate([r[:seq_len] for r in data.rows[:batch_size]], pad_id)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab - 1, (batch_size, seq_len), generator=g)
    ids[ids >= pad_id] += 1  # no pad token inside: a classifier reads the last real token
    ids.clamp_(max=vocab - 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@torch.no_grad()
def cpu_latency(model: torch.nn.Module, batch: dict[str, torch.Tensor], runs: int = 20, warmup: int = 3,
                threads: int = 1) -> dict[str, Any]:
    """Median wall time of a forward pass over `batch` on CPU with `threads` torch threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # fixed threads: the figure does not depend on the machine's load spread
    try:
        times = []
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(**batch)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return {
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "runs": runs,
        "threads": threads,
        "batch_shape": list(batch["input_ids"].shape),
    }


@torch.no_grad()
def lm_loss(model: torch.nn.Module, data: EvalData, batch_size: int = 16) -> dict[str, float]:
    """Mean next-token loss (nats/token) over the data's blocks."""
    total, count = 0.0, 0
    for i in range(0, len(data.rows), batch_size):
        ids = collate(data.rows[i:i + batch_size], 0)["input_ids"]
        logits = model(input_ids=ids).logits[:, :-1].float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum")
        total, count = total + float(loss), count + ids[:, 1:].numel()
    return {"loss": total / max(count, 1)}


@torch.no_grad()
def classify_scores(model: torch.nn.Module, data: EvalData, pad_id: int, batch_size: int = 32) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn) over the labelled rows; also returns the predictions."""
    from sklearn.metrics import accuracy_score, f1_score

    assert data.labels is not None
    preds: list[int] = []
    for i in range(0, len(data.rows), batch_size):
        batch = collate(data.rows[i:i + batch_size], pad_id)
        preds.extend(model(**batch).logits.argmax(-1).tolist())
    return {
        "accuracy": float(accuracy_score(data.labels, preds)),
        # over the classes present in the data or the predictions (scikit-learn's default): a class
        # absent from a small --data file would otherwise count as F1 0
        "macro_f1": float(f1_score(data.labels, preds, average="macro", zero_division=0)),
        "predictions": preds,
    }


def measure(model: torch.nn.Module, kind: str, weight_bytes: int, data: EvalData | None,
            batch: dict[str, torch.Tensor], pad_id: int, runs: int = 20) -> dict[str, Any]:
    figures: dict[str, Any] = {**param_counts(model), "weight_bytes": weight_bytes,
                               "latency": cpu_latency(model, batch, runs=runs)}
    if data is not None:
        figures.update(classify_scores(model, data, pad_id) if kind == CLASSIFIER else lm_loss(model, data))
    return figures


def delta(original: dict[str, Any], compressed: dict[str, Any]) -> dict[str, float]:
    """Compressed minus original for each metric, ratios for size and speed."""
    out: dict[str, float] = {
        "weight_bytes_ratio": compressed["weight_bytes"] / max(original["weight_bytes"], 1),
        "nonzero_params_ratio": compressed["nonzero_params"] / max(original["nonzero_params"], 1),
        "latency_speedup": original["latency"]["median_ms"] / max(compressed["latency"]["median_ms"], 1e-9),
    }
    for key in ("loss", "accuracy", "macro_f1"):
        if key in original and key in compressed:
            out[key] = compressed[key] - original[key]
    if "predictions" in original and "predictions" in compressed:
        same = sum(a == b for a, b in zip(original["predictions"], compressed["predictions"], strict=True))
        out["prediction_agreement"] = same / max(len(original["predictions"]), 1)
    return out
