"""The transfer claim on real data: classify the form of classical Chinese texts (chinese-poetry).

Runs, in one process on one Ray cluster: prepare poetry_scratch (the classify data + char tokenizer),
pretrain the char LM poetry_lm on the training texts, then every strategy's recipe:
scratch (same architecture, random init), full, freeze, lora, features, tfidf. Prints and writes
runs/poetry_transfer/table_<strategies>.md with macro-F1, accuracy, trainable/total parameters and wall time.

    LMSTACK_DATA=../shared/datasets nice -n 10 .venv/bin/python benchmarks/poetry_transfer.py [STRATEGY ...]

Strategies given on the command line run alone (the LM is pretrained only if one of them needs it).
"""

from __future__ import annotations

import json
import os
import sys
import time

from lmstack import runtime
from lmstack.config import load_recipe

RECIPES = "jobs/recipes"
STRATEGIES = ["scratch", "full", "freeze", "lora", "features", "tfidf"]


def main(only: list[str]) -> None:
    from lmstack.tasks import get_task
    from lmstack.train.trainer import train
    from lmstack.transfer.run import finetune

    runtime.connect()
    started = time.time()
    scratch = load_recipe(f"{RECIPES}/poetry_scratch.yaml")
    if not runtime.exists(os.path.join(scratch.data_dir(), "manifest.json")):
        get_task("classify").prepare(scratch)
    lm = load_recipe(f"{RECIPES}/poetry_lm.yaml")
    lm_summary_path = os.path.join(lm.resolved_run_dir(), "summary.json")
    needs_lm = any(load_recipe(f"{RECIPES}/poetry_{n}.yaml").finetune.from_model for n in only or STRATEGIES)
    if needs_lm and not os.path.exists(os.path.join(lm.resolved_run_dir(), "model", "config.json")):
        t0 = time.time()
        get_task("lm").prepare(lm)
        lm_out = train(lm)
        lm_out["pretrain_wall_s"] = round(time.time() - t0, 1)
        runtime.write_json(lm_summary_path, lm_out)
    rows = []
    for name in only or STRATEGIES:
        summary = finetune(load_recipe(f"{RECIPES}/poetry_{name}.yaml"))
        rows.append((name, summary))
        print(json.dumps({"strategy": name, **{k: summary.get(k) for k in ("val_macro_f1", "val_accuracy",
                          "trainable_params", "total_params", "wall_time_s")}}), flush=True)
    lines = ["| recipe | strategy | val macro-F1 | val accuracy | trainable params | total params | wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, s in rows:
        lines.append(f"| poetry_{name} | {s['strategy']} | {s['val_macro_f1']:.4f} | {s['val_accuracy']:.4f} | "
                     f"{s['trainable_params']:,} | {s['total_params']:,} | {s['wall_time_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    lm_info = json.load(open(lm_summary_path)) if os.path.exists(lm_summary_path) else {}
    out = os.path.join("runs", "poetry_transfer")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"table_{'_'.join(only) if only else 'all'}.md"), "w") as f:
        f.write(table + f"\n\npretrained LM: {json.dumps(lm_info)}\ntotal wall time {time.time() - started:.0f} s\n")


if __name__ == "__main__":
    main(sys.argv[1:])
