"""Classification metrics from a confusion matrix, so sums over batches and workers are exact.

The train loop sums each batch's confusion counts (task hook `eval_counts`) and all-reduces them;
every figure here is then a function of those counts. Conventions follow scikit-learn's
(`precision_recall_fscore_support` with zero_division=0): a class never predicted has precision 0,
a class absent from the labels has recall 0, and macro averages run over every class.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[C, C] counts, rows = true class, columns = predicted class; labels < 0 (ignored) are skipped."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    keep = y_true >= 0
    flat = y_true[keep] * num_classes + y_pred[keep]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores(cm: np.ndarray) -> dict[str, np.ndarray | float]:
    """Accuracy and per-class / macro precision, recall, F1 from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, actual)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": actual,
        "macro_precision": float(precision.mean()) if len(tp) else 0.0,
        "macro_recall": float(recall.mean()) if len(tp) else 0.0,
        "macro_f1": float(f1.mean()) if len(tp) else 0.0,
    }


def flat_metrics(cm: np.ndarray, prefix: str = "val_") -> dict[str, float]:
    """The scalar figures a train report carries (Ray Train metrics stay flat)."""
    s = scores(cm)
    return {f"{prefix}{k}": float(s[k]) for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall")}


def report(cm: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Everything, JSON-ready: overall figures, per class, and the confusion matrix."""
    s = scores(cm)
    return {
        "examples": int(np.asarray(cm).sum()),
        "accuracy": s["accuracy"],
        "macro_precision": s["macro_precision"],
        "macro_recall": s["macro_recall"],
        "macro_f1": s["macro_f1"],
        "per_class": {
            label: {
                "precision": float(s["precision"][i]),
                "recall": float(s["recall"][i]),
                "f1": float(s["f1"][i]),
                "support": int(s["support"][i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion": np.asarray(cm, dtype=np.int64).tolist(),
    }
