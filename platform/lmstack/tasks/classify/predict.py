"""Predict with any exported classify model directory; evaluate it on a labelled file.

The directory's lmstack_model.json says which strategy made it: a transformers sequence classifier
(full, freeze, lora merged, multitask's primary head), a frozen backbone + linear head (features),
or a vectorizer + linear head (tfidf, bow). Loaded models are cached per directory.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import torch

from lmstack.artifacts import MODEL_MANIFEST as LINEAGE
from lmstack.artifacts import cache_per_export
from lmstack.tasks.classify.metrics import confusion, report


def lineage(model_dir: str) -> dict[str, Any]:
    path = os.path.join(model_dir, LINEAGE)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def strategy_of(meta: dict[str, Any]) -> str:
    return meta.get("strategy") or meta.get("recipe", {}).get("finetune", {}).get("strategy", "full")


class _Transformers:
    def __init__(self, model_dir: str, meta: dict[str, Any]):
        from transformers import AutoModelForSequenceClassification

        from lmstack.data.tokenizer import load_tokenizer
        from lmstack.models.loading import load_pretrained

        self.model = load_pretrained(AutoModelForSequenceClassification, model_dir).eval()
        self.tok = load_tokenizer(model_dir)
        cfg = self.model.config
        self.labels = [cfg.id2label[i] for i in range(cfg.num_labels)]
        context = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 512)
        wanted = (meta.get("recipe", {}).get("classify") or {}).get("max_length", context)
        self.max_length = min(wanted, context)

    def proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        from lmstack.tasks.classify.prepare import encode

        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = encode(self.tok, texts[i:i + batch_size], self.max_length)
            # Right padding past the batch's longest text changes nothing but the cost: drop it.
            width = max(1, int(mask.sum(1).max()) if len(mask) else 1)
            ids, mask = ids[:, :width], mask[:, :width]
            with torch.no_grad():
                logits = self.model(input_ids=torch.as_tensor(ids, dtype=torch.long),
                                    attention_mask=torch.as_tensor(mask, dtype=torch.long)).logits
            out.append(torch.softmax(logits.float(), -1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))


class _Features:
    def __init__(self, model_dir: str, meta: dict[str, Any]):
        from lmstack.data.tokenizer import load_tokenizer
        from lmstack.tasks.classify.features import load_backbone
        from lmstack.tasks.classify.heads import LinearHead

        self.head = LinearHead(model_dir)
        backbone = os.path.join(model_dir, "backbone")
        self.model = load_backbone(backbone)
        self.tok = load_tokenizer(backbone)
        self.labels = self.head.labels
        self.max_length = self.head.info["max_length"]
        self.pooling = self.head.info["pooling"]

    def proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        from lmstack.tasks.classify.features import embed_ids
        from lmstack.tasks.classify.prepare import encode

        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = encode(self.tok, texts[i:i + batch_size], self.max_length)
            out.append(self.head.proba(embed_ids(self.model, ids, mask, self.pooling)))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))


class _Vectorized:
    def __init__(self, model_dir: str, meta: dict[str, Any]):
        from lmstack.tasks.classify.heads import LinearHead

        self.head = LinearHead(model_dir)
        self.labels = self.head.labels

    def proba(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.head.proba_texts(texts)


@cache_per_export(maxsize=8)
def load(model_dir: str):
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
    meta = lineage(model_dir)
    strategy = strategy_of(meta)
    if strategy == "features":
        return _Features(model_dir, meta)
    if strategy in ("tfidf", "bow"):
        return _Vectorized(model_dir, meta)
    return _Transformers(model_dir, meta)


def predict_proba(model_dir: str, texts: list[str], batch_size: int = 64, **_: Any) -> tuple[list[str], np.ndarray]:
    """(labels, probabilities [N, C]) for `texts`."""
    model = load(os.path.abspath(model_dir))
    return model.labels, model.proba([str(t) for t in texts], batch_size)


def evaluate_file(model_dir: str, path: str, text_field: str | list[str] | None = None,
                  label_field: str | None = None, batch_size: int = 64, **_: Any) -> dict[str, Any]:
    """Accuracy, macro/per-class P/R/F1 and the confusion matrix of the model on a labelled file.
    Records without text or label, or with a label the model does not know, are counted apart."""
    from lmstack.tasks.classify.config import ClassifyConfig
    from lmstack.tasks.classify.records import read_records

    started = time.time()
    saved = lineage(model_dir).get("recipe", {}).get("classify") or {}
    cfg = ClassifyConfig(text_field=text_field or saved.get("text_field", "text"),
                         label_field=label_field or saved.get("label_field", "label"))
    recs = read_records([path], cfg)
    labels, _ = predict_proba(model_dir, [])
    index = {label: i for i, label in enumerate(labels)}
    known = [ex for ex in recs.examples if ex["label"] in index]
    _, probs = predict_proba(model_dir, [ex["text"] for ex in known], batch_size=batch_size)
    y_true = np.asarray([index[ex["label"]] for ex in known], dtype=np.int64)
    cm = confusion(y_true, probs.argmax(1) if len(known) else y_true, len(labels))
    return {
        **report(cm, labels),
        "path": path,
        "model_dir": model_dir,
        "rejected": len(recs.rejects),
        "unknown_label": len(recs.examples) - len(known),
        "wall_time_s": round(time.time() - started, 2),
    }
