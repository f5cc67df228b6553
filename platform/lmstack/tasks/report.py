"""What a task adds to a run's report.html: titled parts (a PNG figure, a table, a block of text) that
lmstack.tracking.report lays out. Tasks build them from what their runs already wrote (metrics.jsonl
rows, evaluate/*.json, the prepared data); nothing here knows HTML."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ReportPart:
    title: str
    png: bytes | None = None  # a figure, embedded inline
    table: list[list[Any]] = field(default_factory=list)  # first row is the header
    text: str | None = None  # preformatted (samples, translations)
    note: str | None = None  # one line under the title


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display on cluster nodes or test machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def curves(rows: list[dict[str, Any]], keys: list[str], title: str, ylabel: str = "") -> bytes | None:
    """One line per key over `step` from metrics.jsonl rows; None when no row has any of the keys."""
    series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and "step" in r]
              for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    for key, points in series.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def final_values(rows: list[dict[str, Any]], keys: list[str]) -> list[list[Any]]:
    """[[metric, last value, best value, at step]] for keys present in the rows (best: max unless a loss/error)."""
    table: list[list[Any]] = [["metric", "last", "best", "best at step"]]
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
        if not points:
            continue
        lower_is_better = any(w in key for w in ("loss", "wer", "cer", "ppl", "bpb"))
        step, best = (min if lower_is_better else max)(points, key=lambda p: p[1])
        table.append([key, points[-1][1], best, step])
    return table if len(table) > 1 else []


@dataclass
class RunRecord:
    """What a finished run left behind, read once by the report and handed to the task."""

    run_dir: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]]  # metrics.jsonl
    info: dict[str, Any] | None  # the prepared data's manifest, when found
    model_dir: str | None  # the exported model, when there is one
    recipe: dict[str, Any] | None = None  # the recipe that produced it (from the model's lineage)
    lineage: dict[str, Any] = field(default_factory=dict)  # the exported model's lmstack_model.json
