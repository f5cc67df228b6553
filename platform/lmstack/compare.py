"""`lmstack compare RUN...`: one table of what each run bought, printed and written as Markdown + PNG.

A run is a directory with summary.json (finetune, distill, train runs) or a compressed model directory
with compress_report.json. Columns: strategy, the metric (test_macro_f1 when every run has it, else
val_macro_f1 where any run has it, else val_loss), trainable parameters, train time, model size (bytes of the model directory's weight files).
"""

from __future__ import annotations

import json
import os
from typing import Any

from lmstack.compress.load import weight_bytes

COLUMNS = ("run", "strategy", "metric", "trainable_params", "train_time_s", "model_bytes")


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise FileNotFoundError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None


def _trainable_from_dir(model_dir: str) -> int | None:
    """Parameters in the exported weights (train runs do not record them; every weight trained)."""
    from safetensors import safe_open

    files = [f for f in os.listdir(model_dir) if f.endswith(".safetensors")] if os.path.isdir(model_dir) else []
    if not files:
        return None
    total = 0
    for name in files:
        with safe_open(os.path.join(model_dir, name), "pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = f.get_slice(key).get_shape()
                n = 1
                for d in shape:
                    n *= d
                total += n
    return total


def load_run(path: str, metric: str) -> dict[str, Any]:
    """One table row from a run directory or a compressed model directory."""
    name = os.path.basename(os.path.normpath(path))
    report_path = os.path.join(path, "compress_report.json")
    summary_path = os.path.join(path, "summary.json")
    if os.path.exists(report_path):
        rep = _read(report_path)
        figures = rep["compressed"]
        key = "macro_f1" if metric.endswith("macro_f1") else "loss" if metric.endswith("loss") else metric
        strategy = "int8" if rep.get("method") == "int8_dynamic" else f"prune {rep.get('method')} {rep.get('amount')}"
        return {"run": name, "strategy": strategy, "metric": figures.get(key), "trainable_params": None,
                "train_time_s": rep.get("wall_time_s"), "model_bytes": weight_bytes(path),
                "note": f"metric on {rep.get('data')}" if rep.get("data") else "no data given"}
    if not os.path.exists(summary_path):
        raise FileNotFoundError(f"{path}: no summary.json or compress_report.json (not a run directory)")
    s = _read(summary_path)
    model_dir = s.get("model_dir") or os.path.join(path, "model")
    if not os.path.isabs(model_dir) and not os.path.isdir(model_dir):
        model_dir = os.path.join(path, model_dir)
    trainable = s.get("trainable_params")
    if trainable is None:
        trainable = _trainable_from_dir(model_dir)
    return {
        "run": name,
        "strategy": s.get("strategy") or s.get("verb"),  # a plain `lmstack train` run: "train"
        "metric": s.get(metric),
        "trainable_params": trainable,
        "train_time_s": s.get("wall_time_s"),
        "model_bytes": weight_bytes(model_dir) if os.path.isdir(model_dir) else None,
        "note": "",
    }


def _fmt(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column == "metric":
        return f"{value:.4f}"
    if column == "train_time_s":
        return f"{value:.1f}"
    if column == "model_bytes":
        return f"{value / 1e6:.2f} MB" if value >= 1e5 else f"{value / 1e3:.1f} kB"
    if column == "trainable_params":
        return f"{value:,}"
    return str(value)


def markdown(rows: list[dict[str, Any]], metric: str) -> str:
    heads = ["run", "strategy", metric, "trainable params", "train time (s)", "model size", "note"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in rows:
        cells = [_fmt(r[c], c) for c in COLUMNS] + [r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], metric: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("metric", metric), ("trainable_params", "trainable parameters"),
              ("train_time_s", "train time (s)"), ("model_bytes", "model size (bytes)")]
    fig, axes = plt.subplots(1, 4, figsize=(4 * 4, 3.6))
    labels = [f"{r['run']}\n({r['strategy']})" for r in rows]
    for ax, (col, title) in zip(axes, panels, strict=True):
        values = [r[col] if r[col] is not None else 0 for r in rows]
        bars = ax.bar(range(len(rows)), values, color="tab:blue")
        for bar, r in zip(bars, rows, strict=True):
            if r[col] is None:
                bar.set_color("lightgrey")  # missing, not zero
        ax.set_title(title)
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(runs: list[str], output: str, metric: str | None = None) -> dict[str, Any]:
    """Rows for `runs`, the table as Markdown, compare.md / compare.png / compare.json under `output`."""
    if not runs:
        raise FileNotFoundError("compare: give at least one run directory")
    if metric is None:
        summaries = [_read(os.path.join(r, "summary.json")) for r in runs
                     if os.path.exists(os.path.join(r, "summary.json"))]
        # The held-out test figure when every run has one (validation also picked their checkpoints).
        if summaries and all("test_macro_f1" in s for s in summaries):
            metric = "test_macro_f1"
        else:
            metric = "val_macro_f1" if any("val_macro_f1" in s for s in summaries) else "val_loss"
    rows = [load_run(r, metric) for r in runs]
    table = markdown(rows, metric)
    os.makedirs(output, exist_ok=True)
    md, png, js = (os.path.join(output, f"compare.{ext}") for ext in ("md", "png", "json"))
    with open(md, "w", encoding="utf-8") as f:
        f.write(table)
    chart(rows, metric, png)
    with open(js, "w", encoding="utf-8") as f:
        json.dump({"metric": metric, "rows": rows}, f, indent=2)
    return {"metric": metric, "rows": rows, "table": table, "markdown": md, "chart": png, "json": js}
