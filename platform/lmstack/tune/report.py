"""After a search: the trials table (printed + CSV), PNG plots, best recipe YAML and model."""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any

import yaml

from lmstack import runtime
from lmstack.config import Recipe, validate_recipe
from lmstack.tasks import get_spec
from lmstack.tracking.finish import finish_search
from lmstack.tune.space import apply_params


def _better(mode: str):
    return min if mode == "min" else max


def trial_rows(recipe: Recipe, results) -> list[dict[str, Any]]:
    """One row per trial: id, params, best metric, last step, status, time, its best checkpoint."""
    cfg = recipe.tune
    pick = _better(cfg.mode)
    rows = []
    for result in results:
        df = result.metrics_dataframe
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or os.path.basename(result.path)
        row: dict[str, Any] = {"trial_id": trial_id}
        row.update({k: (result.config or {}).get(k) for k in cfg.space})
        values = [] if df is None or cfg.metric not in df else [v for v in df[cfg.metric] if not _nan(v)]
        row[cfg.metric] = pick(values) if values else None
        row["step"] = int(df["step"].max()) if df is not None and "step" in df else 0
        if result.error is not None:
            row["status"] = "error"
        elif row["step"] < recipe.train.max_steps:
            row["status"] = "stopped early"
        else:
            row["status"] = "completed"
        row["time_s"] = round(float(metrics.get("time_total_s", 0.0)), 1)
        row["checkpoint"] = _best_checkpoint(df, cfg.metric, cfg.mode)
        row["_history"] = [] if df is None or "step" not in df or cfg.metric not in df else list(
            zip(df["step"], df[cfg.metric], strict=True))
        rows.append(row)
    rows.sort(key=lambda r: (r[cfg.metric] is None, (r[cfg.metric] or 0) * (1 if cfg.mode == "min" else -1)))
    return rows


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _best_checkpoint(df, metric: str, mode: str) -> str | None:
    """The best-scoring Train checkpoint still on disk (older ones were rotated away)."""
    if df is None or "checkpoint_path" not in df or metric not in df:
        return None
    kept = [(v, p) for v, p in zip(df[metric], df["checkpoint_path"], strict=True)
            if isinstance(p, str) and not _nan(v) and runtime.exists(p)]
    if not kept:
        return None
    return (min if mode == "min" else max)(kept, key=lambda vp: vp[0])[1]


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_csv(path: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    runtime.write_text(path, buf.getvalue())


def plot(recipe: Recipe, rows: list[dict[str, Any]], out_dir: str) -> list[str]:
    """metric_vs_step.png (a line per trial) and metric_vs_params.png (a panel per searched key)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on cluster nodes
    import matplotlib.pyplot as plt

    cfg = recipe.tune
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        if r["_history"]:
            steps, values = zip(*r["_history"], strict=True)
            ax.plot(steps, values, marker=".", label=f"{r['trial_id']} ({r['status']})")
    ax.set_xlabel("step")
    ax.set_ylabel(cfg.metric)
    ax.set_title(f"{recipe.name}: {cfg.metric} per trial")
    if len(rows) <= 12:
        ax.legend(fontsize=7)
    paths.append(_save(fig, runtime.join(out_dir, "metric_vs_step.png")))
    plt.close(fig)

    keys = list(cfg.space)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        pts = [(r[key], r[cfg.metric]) for r in rows if r[cfg.metric] is not None and r[key] is not None]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in pts)
        xs = [x if numeric else str(x) for x, _ in pts]
        ax.scatter(xs, [y for _, y in pts])
        positive = numeric and pts and min(x for x, _ in pts) > 0
        if cfg.space[key].loguniform is not None or (positive and max(xs) / min(xs) >= 20):
            ax.set_xscale("log")  # learning-rate-like ranges read better in decades
        ax.set_xlabel(key)
        ax.set_ylabel(f"best {cfg.metric}")
    fig.tight_layout()
    paths.append(_save(fig, runtime.join(out_dir, "metric_vs_params.png")))
    plt.close(fig)
    return paths


def _save(fig, path: str) -> str:
    if runtime.is_uri(path):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        fs, p = runtime.filesystem(path)
        with fs.open_output_stream(p) as f:
            f.write(buf.getvalue())
    else:
        fig.savefig(path, dpi=110)
    return path


def best_recipe(recipe: Recipe, params: dict[str, Any], root: str) -> Recipe:
    """The winning configuration as a complete recipe: trains in <run>/best on the same prepared data."""
    raw = apply_params(recipe.model_dump(mode="json"), params)
    raw["tune"] = None
    raw["run_dir"] = runtime.join(root, "best")
    data_dir = recipe.data_dir()
    if recipe.tune.cross_validation:  # trains on fold 0's split, prepared by the search
        from lmstack.folds import fold_recipe

        data_dir = fold_recipe(recipe, 0, get_spec(recipe.task).folds_share_data).data_dir()
    raw["data"]["output"] = data_dir if runtime.is_uri(data_dir) else os.path.abspath(data_dir)
    return validate_recipe(raw, "best recipe")


def write_results(recipe: Recipe, results, info: dict[str, Any], root: str, started: float, log=print
                  ) -> dict[str, Any]:
    from ray.train import Checkpoint

    from lmstack.train.trainer import export_model

    cfg = recipe.tune
    rows = trial_rows(recipe, results)
    columns = ["trial_id", *cfg.space, cfg.metric, "step", "status", "time_s"]
    log(format_table(rows, columns))
    csv_path = runtime.join(root, "trials.csv")
    write_csv(csv_path, rows, [*columns, "checkpoint"])
    plots = plot(recipe, rows, root)

    scored = [r for r in rows if r[cfg.metric] is not None]
    if not scored:
        raise RuntimeError(f"no trial of {recipe.name!r} reported {cfg.metric}; see {runtime.join(root, 'tune')}")
    best = scored[0]
    params = {k: best[k] for k in cfg.space}
    winner = best_recipe(recipe, params, root)
    recipe_path = runtime.join(root, "best_recipe.yaml")
    runtime.write_text(recipe_path, yaml.safe_dump(winner.model_dump(mode="json"), sort_keys=False))

    model_dir = None
    if best["checkpoint"]:
        model_dir = runtime.join(root, "model")
        lineage = {"task": recipe.task, "recipe": winner.model_dump(mode="json"), "recipe_hash": winner.fingerprint(),
                   "data_manifest": runtime.join(recipe.data_dir(), "manifest.json"),
                   "checkpoint": best["checkpoint"], "tune": {"trial_id": best["trial_id"], "params": params},
                   "metrics": {cfg.metric: best[cfg.metric], "step": best["step"]}}
        with Checkpoint(best["checkpoint"]).as_directory() as path:
            export_model(path, get_spec(recipe.task), info, model_dir, lineage)
    figures = {
        "metric": cfg.metric,
        "best_value": best[cfg.metric],
        "best_params": params,
        "best_trial": best["trial_id"],
        "trials": len(rows),
        "by_status": {s: sum(r["status"] == s for r in rows) for s in ("completed", "stopped early", "error")},
        # CPU-seconds the trials held: wall time x the CPUs their Train workers reserved.
        "trial_cpu_s": round(sum(r["time_s"] for r in rows) * recipe.train.num_workers
                             * recipe.train.cpus_per_worker, 1),
        "best_recipe": recipe_path,
        "model_dir": model_dir,
        "trials_csv": csv_path,
        "plots": plots,
    }
    summary = runtime.write_summary(root, "tune", figures, started)
    log(f"best {cfg.metric} {best[cfg.metric]:.4f} with {params}; recipe {recipe_path}; model {model_dir}")
    finish_search(recipe, root, rows, log=log)
    return summary
