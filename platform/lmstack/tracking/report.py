"""report.html: one self-contained page per run (curves, data, model, throughput, the task's figures,
lineage), or one page comparing several runs. Images are inline PNGs (matplotlib, Agg): the page needs
no network and no server, so it can be mailed, attached to an MLflow run or opened from a bucket."""

from __future__ import annotations

import base64
import datetime as dt
import glob
import html
import os
from typing import Any

import yaml

from lmstack import runtime
from lmstack.tasks import get_spec
from lmstack.tasks.report import ReportPart, RunRecord, curves, png, pyplot
from lmstack.tracking.lineage import code_version, load_run, task_of

REPORT = "report.html"
# Model config keys worth showing (transformers' names and ours); other keys are implementation detail.
SHAPE_KEYS = ("model_type", "architectures", "n_layer", "num_hidden_layers", "encoder_layers", "decoder_layers",
              "n_head", "num_attention_heads", "num_key_value_heads", "n_embd", "hidden_size", "d_model",
              "intermediate_size", "n_positions", "max_position_embeddings", "vocab_size", "num_labels",
              "arch", "d_ff", "layers", "heads", "dim", "n_mels", "max_len", "num_items")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.meta{color:#666}.note{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;white-space:pre-wrap}
.grid{display:flex;flex-wrap:wrap;gap:1em}.grid>div{flex:1 1 420px}
"""


# -- small HTML pieces ---------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        return html.escape(yaml.safe_dump(v, default_flow_style=True, width=10_000).strip())
    return html.escape(str(v))


def table(rows: list[list[Any]]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                         else f"<td>{_fmt(c)}</td>" for c in row) + "</tr>"
        for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(data: bytes | None, alt: str) -> str:
    if not data:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def part_html(part: ReportPart) -> str:
    out = [f"<h3>{html.escape(part.title)}</h3>"]
    if part.note:
        out.append(f'<p class="note">{html.escape(part.note)}</p>')
    out.append(image(part.png, part.title))
    out.append(table(part.table))
    if part.text is not None:
        out.append(f"<pre>{html.escape(part.text)}</pre>")
    return "\n".join(out)


def page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


# -- what a run holds ----------------------------------------------------------------------------
def key_figures(summary: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = [["figure", "value"]]
    for k, v in summary.items():
        if isinstance(v, (int, float, bool)) or (isinstance(v, str) and "/" not in v and len(v) < 80):
            rows.append([k, v])
    return rows if len(rows) > 1 else []


def data_rows(info: dict[str, Any] | None) -> list[list[Any]]:
    """The manifest's counts (documents/records kept, rejected by reason, duplicates, examples, tokens)."""
    if not info:
        return []
    rows: list[list[Any]] = [["data", "value"]]

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            if not value:
                rows.append([prefix, "none"])
            for k, v in value.items():
                add(f"{prefix}.{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append([prefix, value])

    for key in ("documents", "records", "rejected", "rejected_by_reason", "subsampled_out", "examples",
                "class_counts", "tokens", "blocks", "users", "items", "interactions", "block_size",
                "max_length", "vocab_size", "bytes_per_token_val", "wall_time_s"):
        if key in info:
            add(key, info[key])
    tok = info.get("tokenizer") or {}
    if tok.get("vocab_size"):
        rows.append(["tokenizer", f"{tok.get('kind', '')} {tok['vocab_size']:,}".strip()])
    if info.get("labels"):
        rows.append(["labels", ", ".join(map(str, info["labels"]))])
    return rows if len(rows) > 1 else []


def rejects_png(info: dict[str, Any] | None) -> bytes | None:
    info = info or {}
    reasons = dict(info.get("rejected_by_reason") or (info.get("documents") or {}).get("rejected_by_reason") or {})
    docs = info.get("documents") or {}
    for key in ("duplicates_exact", "duplicates_near"):
        if docs.get(key):
            reasons[key.replace("_", " ")] = docs[key]
    for rule, n in (docs.get("dropped_by_rule") or {}).items():
        if n:
            reasons[f"rule: {rule}"] = n
    if not reasons:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.4 * len(reasons) + 1.2))
    ax.barh(list(reasons), list(reasons.values()), color="#c0504d")
    ax.set_xlabel("records set aside")
    ax.set_title("rejected and duplicate records, by reason")
    return png(fig)


def model_rows(run: RunRecord) -> list[list[Any]]:
    rows: list[list[Any]] = [["model", "value"]]
    if run.model_dir:
        rows.append(["directory", run.model_dir])
        for name in ("config.json", *sorted(os.path.basename(p) for p in glob.glob(
                os.path.join(run.model_dir, "*_model.json")) if not p.endswith("lmstack_model.json"))):
            path = runtime.join(run.model_dir, name)
            if runtime.exists(path):
                cfg = runtime.read_json(path)
                rows += [[k, cfg[k]] for k in SHAPE_KEYS if k in cfg and not isinstance(cfg[k], dict)]
    s = run.summary
    params = (s.get("trainable_params"), s.get("total_params"))
    if params[1] is None and run.model_dir:
        params = (None, count_weights(run.model_dir))
    if params[1]:
        rows.append(["parameters", params[1]])
    if params[0] is not None:
        rows.append(["trainable parameters", params[0]])
    return rows if len(rows) > 1 else []


def count_weights(model_dir: str) -> int | None:
    """Parameters in the export's safetensors files, from their headers (no tensor is loaded)."""
    from safetensors import safe_open

    files = glob.glob(os.path.join(model_dir, "**", "*.safetensors"), recursive=True)
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(path, framework="numpy") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                total += n
    return total


def throughput_rows(run: RunRecord) -> list[list[Any]]:
    speeds = [r["tokens_per_s"] for r in run.rows if isinstance(r.get("tokens_per_s"), (int, float))]
    rows: list[list[Any]] = [["throughput", "value"]]
    if speeds:
        # The first window carries start-up (data pipeline, compilation): the median is the steady state.
        rows.append(["items/s (median of log windows)", sorted(speeds)[len(speeds) // 2]])
        rows.append(["items/s (last window)", speeds[-1]])
    seen = [r["tokens_seen"] for r in run.rows if isinstance(r.get("tokens_seen"), (int, float))]
    if seen:
        rows.append(["items seen", seen[-1]])
    for key in ("steps", "wall_time_s"):
        if isinstance(run.summary.get(key), (int, float)):
            rows.append([key, run.summary[key]])
    return rows if len(rows) > 1 else []


def lineage_rows(run: RunRecord) -> list[list[Any]]:
    lin, info = run.lineage, run.info or {}
    rows: list[list[Any]] = [["lineage", "value"]]
    for label, value in (("recipe", (run.recipe or {}).get("name")), ("recipe hash", lin.get("recipe_hash")),
                         ("data manifest", lin.get("data_manifest")),
                         ("data prepare hash", info.get("prepare_hash")),
                         ("data inputs", info.get("inputs")), ("from model", (run.recipe or {}).get(
                             "finetune", {}).get("from_model")),
                         ("checkpoint", lin.get("checkpoint") or run.summary.get("checkpoint")),
                         ("code version", code_version())):
        if value:
            rows.append([label, value])
    return rows


def training_images(rows: list[dict[str, Any]]) -> list[str]:
    loss = curves(rows, ["train_loss", "val_loss"], "loss per step", "loss")
    lr = curves(rows, ["lr"], "learning rate", "lr")
    speed = curves(rows, ["tokens_per_s"], "throughput (items/s)", "items/s")
    cells = [image(loss, "loss curves"), image(lr, "learning rate"), image(speed, "throughput")]
    return [f'<div class="grid">{"".join(f"<div>{c}</div>" for c in cells if c)}</div>'] if any(cells) else []


# -- pages ---------------------------------------------------------------------------------------
def run_html(run: RunRecord) -> str:
    s = run.summary
    task = task_of(run)
    name = (run.recipe or {}).get("name") or os.path.basename(run.run_dir.rstrip("/"))
    strategy = s.get("strategy") or (((run.recipe or {}).get("finetune") or {}).get("strategy")
                                     if s.get("verb") == "finetune" else None)
    when = dt.datetime.fromtimestamp(os.path.getmtime(runtime.join(run.run_dir, "summary.json")), dt.timezone.utc) \
        if not runtime.is_uri(run.run_dir) else None
    meta = " · ".join(x for x in (f"task {task}", s.get("verb"), strategy and f"strategy {strategy}",
                                  when and when.strftime("%Y-%m-%d %H:%M UTC"), run.run_dir) if x)
    body = [f"<h1>{html.escape(name)}</h1>", f'<p class="meta">{html.escape(meta)}</p>',
            "<h2>Results</h2>", table(key_figures(s))]
    if run.rows:
        body += ["<h2>Training</h2>", *training_images(run.rows)]
    body += search_parts(s)
    parts = get_spec(task).report_parts(run)
    if parts:
        body += ["<h2>Task figures</h2>", *(part_html(p) for p in parts)]
    body += ["<h2>Data</h2>", image(rejects_png(run.info), "rejects by reason"), table(data_rows(run.info)),
             "<h2>Model</h2>", table(model_rows(run)), "<h2>Throughput</h2>", table(throughput_rows(run)),
             "<h2>Lineage</h2>", table(lineage_rows(run))]
    if run.recipe:
        body.append("<details><summary>recipe</summary><pre>"
                    f"{html.escape(yaml.safe_dump(run.recipe, sort_keys=False))}</pre></details>")
    return page(f"{name}: lmstack report", body)


def search_parts(summary: dict[str, Any]) -> list[str]:
    """A search's trials table (trials.csv) and its plots (metric per step and per searched value)."""
    import csv
    import io

    out = []
    if summary.get("trials_csv") and runtime.exists(summary["trials_csv"]):
        rows = list(csv.reader(io.StringIO(runtime.read_text(summary["trials_csv"]))))
        cut = rows[0].index("checkpoint") if "checkpoint" in rows[0] else None
        out += ["<h2>Search</h2>", table([r[:cut] for r in rows[:51]])]
    for path in summary.get("plots") or []:
        if runtime.exists(path) and not runtime.is_uri(path):
            with open(path, "rb") as f:
                out.append(image(f.read(), os.path.basename(path)))
    return out


def write_report(run_dir: str) -> str:
    """Build (again) <run_dir>/report.html from what the run wrote; returns its path."""
    path = runtime.join(run_dir, REPORT)
    runtime.write_text(path, run_html(load_run(run_dir)))
    return path


def comparison_html(runs: list[RunRecord]) -> str:
    names = [os.path.basename(r.run_dir.rstrip("/")) for r in runs]
    keys: list[str] = []
    for r in runs:
        keys += [k for k, v in r.summary.items() if k not in keys and isinstance(v, (int, float, bool))]
    rows: list[list[Any]] = [["figure", *names]]
    rows += [[k, *(r.summary.get(k, "") for r in runs)] for k in keys]
    rows.append(["task", *(task_of(r) for r in runs)])
    rows.append(["run dir", *(r.run_dir for r in runs)])
    body = [f"<h1>Comparison of {len(runs)} runs</h1>", "<h2>Results</h2>", table(rows), "<h2>Curves</h2>"]
    metrics = ["train_loss", "val_loss"]
    for r in runs:
        metric = get_spec(task_of(r)).select_metric[0]
        if metric not in metrics:
            metrics.append(metric)
    cells = []
    for metric in metrics:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5.0, 3.0))
        drawn = False
        for name, r in zip(names, runs, strict=True):
            pts = [(x["step"], x[metric]) for x in r.rows if isinstance(x.get(metric), (int, float)) and "step" in x]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=name)
                drawn = True
        ax.set_xlabel("step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
            cells.append(image(png(fig), f"{metric} per run"))
        else:
            plt.close(fig)
    body.append(f'<div class="grid">{"".join(f"<div>{c}</div>" for c in cells)}</div>')
    body += ["<h2>Lineage</h2>", table([["run", "recipe hash", "data prepare hash", "model"]] + [
        [n, r.lineage.get("recipe_hash", ""), (r.info or {}).get("prepare_hash", ""), r.model_dir or ""]
        for n, r in zip(names, runs, strict=True)])]
    return page("lmstack comparison", body)


def write_comparison(run_dirs: list[str], out: str) -> str:
    runtime.write_text(out, comparison_html([load_run(d) for d in run_dirs]))
    return out
