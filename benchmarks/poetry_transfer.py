"""The transfer claim on real data: classify the form of classical Chinese texts (chinese-poetry).

Runs, in one process on one Ray cluster: prepare poetry_scratch (the classify data, a held-out test split,
lm_text/ and the char tokenizer), pretrain the char LM poetry_lm on lm_text/ (every train-split text, no
validation or test text), then every strategy's recipe: scratch (same architecture, random init), full,
freeze, lora, features, tfidf. Each run picks its checkpoint on validation and is scored once on test.

    LMSTACK_DATA=../shared/datasets .venv/bin/python benchmarks/poetry_transfer.py [STRATEGY ...]
    LMSTACK_DATA=../shared/datasets .venv/bin/python benchmarks/poetry_transfer.py [STRATEGY ...] --steps 25 50 100 200

The first form writes runs/poetry_transfer/table_<strategies>.md; --steps trains the given strategies
(default scratch and full) at each step budget, the recipe otherwise unchanged, and writes
runs/poetry_transfer/steps_<strategies>.md: the transfer claim is that full beats scratch at equal steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from lmstack import runtime
from lmstack.config import load_recipe

RECIPES = "jobs/recipes"
STRATEGIES = ["scratch", "full", "freeze", "lora", "features", "tfidf"]
OUT = os.path.join("runs", "poetry_transfer")


def ensure_lm(names: list[str]) -> dict:
    from lmstack.tasks import get_spec
    from lmstack.train.trainer import train

    scratch = load_recipe(f"{RECIPES}/poetry_scratch.yaml")
    manifest = os.path.join(scratch.data_dir(), "manifest.json")
    if not runtime.exists(manifest) or not runtime.exists(os.path.join(scratch.data_dir(), "lm_text")):
        get_spec("classify").prepare(scratch)
    lm = load_recipe(f"{RECIPES}/poetry_lm.yaml")
    summary_path = os.path.join(lm.resolved_run_dir(), "summary.json")
    needs_lm = any(load_recipe(f"{RECIPES}/poetry_{n}.yaml").finetune.from_model for n in names)
    if needs_lm and not os.path.exists(os.path.join(lm.resolved_run_dir(), "model", "config.json")):
        t0 = time.time()
        get_spec("lm").prepare(lm)
        out = train(lm)
        out["pretrain_wall_s"] = round(time.time() - t0, 1)
        runtime.write_json(summary_path, out)
    return json.load(open(summary_path)) if os.path.exists(summary_path) else {}


def figures(s: dict) -> str:
    return (f"{s['val_macro_f1']:.4f} | {s.get('test_macro_f1', float('nan')):.4f} | "
            f"{s.get('test_accuracy', float('nan')):.4f}")


def strategies(names: list[str]) -> str:
    from lmstack.train.finetune import finetune

    lines = ["| recipe | strategy | val macro-F1 | test macro-F1 | test accuracy | trainable params | total params "
             "| wall time (s) |", "|---|---|---|---|---|---|---|---|"]
    for name in names:
        s = finetune(load_recipe(f"{RECIPES}/poetry_{name}.yaml"))
        print(json.dumps({"strategy": name, **{k: s.get(k) for k in (
            "val_macro_f1", "test_macro_f1", "test_accuracy", "trainable_params", "wall_time_s")}}), flush=True)
        lines.append(f"| poetry_{name} | {s['strategy']} | {figures(s)} | {s['trainable_params']:,} | "
                     f"{s['total_params']:,} | {s['wall_time_s']:.0f} |")
    return "\n".join(lines)


def steps_sweep(budgets: list[int], names: list[str], seed: int | None = None) -> str:
    from lmstack.train.finetune import finetune

    lines = ["| recipe | steps | val macro-F1 | test macro-F1 | test accuracy |", "|---|---|---|---|---|"]
    for steps in budgets:
        for name in names:
            overrides = [f"train.max_steps={steps}", f"train.eval_every={max(steps // 2, 1)}",
                         f"train.warmup_steps={max(steps // 10, 1)}",
                         f"run_dir={OUT}/steps/{name}_{steps}" + (f"_seed{seed}" if seed is not None else "")]
            if seed is not None:  # another initialization (scratch) / head (full) and batch order
                overrides.append(f"train.seed={seed}")
            s = finetune(load_recipe(f"{RECIPES}/poetry_{name}.yaml", overrides))
            print(json.dumps({"steps": steps, "recipe": name, "val_macro_f1": s["val_macro_f1"],
                              "test_macro_f1": s.get("test_macro_f1"), "test_accuracy": s.get("test_accuracy")}),
                  flush=True)
            lines.append(f"| poetry_{name} | {steps} | {figures(s)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("strategies", nargs="*", help=f"a subset of {STRATEGIES} (default: all)")
    ap.add_argument("--steps", type=int, nargs="+", help="step budgets for the scratch-vs-full sweep")
    ap.add_argument("--seed", type=int, help="train.seed for the sweep's runs (default: the recipes')")
    args = ap.parse_args()
    if unknown := set(args.strategies) - set(STRATEGIES):
        ap.error(f"unknown strategies {sorted(unknown)}; known: {STRATEGIES}")
    runtime.connect()
    started = time.time()
    names = args.strategies or (["scratch", "full"] if args.steps else STRATEGIES)
    lm_info = ensure_lm(names)
    table = steps_sweep(args.steps, names, args.seed) if args.steps else strategies(names)
    print(table)
    os.makedirs(OUT, exist_ok=True)
    name = f"{'steps' if args.steps else 'table'}_{'_'.join(names)}" + (f"_seed{args.seed}" if args.seed is not None else "")
    with open(os.path.join(OUT, f"{name}.md"), "w") as f:
        f.write(table + f"\n\npretrained LM: {json.dumps(lm_info)}\ntotal wall time {time.time() - started:.0f} s\n")


if __name__ == "__main__":
    main()
