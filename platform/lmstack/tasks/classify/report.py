"""Classify's report figures: the exported model's confusion matrix and per-class scores on the
validation (and held-out test) split, from <run>/evaluate/*metrics.json that the run already wrote."""

from __future__ import annotations

import os
from typing import Any

from lmstack import runtime
from lmstack.tasks.report import ReportPart, RunRecord, png, pyplot


def confusion_png(labels: list[str], cm: list[list[int]], title: str) -> bytes:
    import numpy as np

    plt = pyplot()
    m = np.asarray(cm)
    size = max(3.2, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:  # counts stay legible up to here
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return png(fig)


def per_class_table(rep: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [["class", "precision", "recall", "f1", "support"]]
    for label, s in rep.get("per_class", {}).items():
        rows.append([label, s["precision"], s["recall"], s["f1"], s["support"]])
    return rows


def confusion_parts(run: RunRecord) -> list[ReportPart]:
    parts = []
    for name, split in (("metrics.json", "validation"), ("test_metrics.json", "held-out test")):
        path = runtime.join(run.run_dir, "evaluate", name)
        if not runtime.exists(path):
            continue
        rep = runtime.read_json(path)
        if not rep.get("confusion"):
            continue
        note = (f"{os.path.basename(path)}: {rep['examples']} examples, accuracy {rep['accuracy']:.4f}, "
                f"macro-F1 {rep['macro_f1']:.4f} (the exported model, as served)")
        parts.append(ReportPart(f"Confusion matrix ({split})", note=note,
                                png=confusion_png(rep["labels"], rep["confusion"], f"{split} split"),
                                table=per_class_table(rep)))
    return parts
