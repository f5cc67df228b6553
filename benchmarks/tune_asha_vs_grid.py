"""ASHA against plain grid search over the same space on tinyshakespeare (one run of each).

    LMSTACK_DATA=../shared/datasets .venv/bin/python benchmarks/tune_asha_vs_grid.py [--steps 200]

Both searches train the same grid of learning rates on jobs/recipes/shakespeare_char_tune.yaml,
shrunk to a few hundred steps; ASHA may stop trials at its rungs, grid runs every trial to the end.
Reported per search: best validation loss, optimizer steps trained in all (load-independent compute),
CPU-seconds the trials held (wall time x reserved CPUs) and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "platform"))

from lmstack import runtime  # noqa: E402
from lmstack.config import load_recipe, validate_recipe  # noqa: E402
from lmstack.tune.tuner import tune_recipe  # noqa: E402

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "jobs", "recipes", "shakespeare_char_tune.yaml")


def search(base: dict, out: str, name: str, scheduler: str, args) -> dict:
    raw = json.loads(json.dumps(base))
    raw["run_dir"] = os.path.join(out, name)
    raw["tune"].update(search="grid", scheduler=scheduler, grace_period=args.eval_every, num_samples=1,
                       max_concurrent=args.concurrent,
                       space={"train.lr": {"grid": args.lrs}, "model.n_layer": {"grid": args.layers}})
    recipe = validate_recipe(raw, name)
    started = time.time()
    summary = tune_recipe(recipe, log=print)
    steps = sum(int(r["step"]) for r in _rows(summary["trials_csv"]))
    return {"search": name, "best_val_loss": round(summary["best_value"], 4), "best_params": summary["best_params"],
            "trials": summary["trials"], "stopped_early": summary["by_status"]["stopped early"],
            "steps_trained": steps, "trial_cpu_s": summary["trial_cpu_s"], "wall_s": round(time.time() - started, 1)}


def _rows(path: str) -> list[dict]:
    import csv

    return list(csv.DictReader(open(path)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 3e-3, 1e-3, 3e-4])
    p.add_argument("--layers", type=int, nargs="+", default=[2])
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--out", default="runs/bench_tune_asha_vs_grid")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    os.environ.setdefault("LMSTACK_DATA", os.path.join(os.path.dirname(RECIPE), "..", "..", "..", "shared", "datasets"))
    os.environ.setdefault("LMSTACK_PROGRESS", "0")
    out = os.path.abspath(args.out)

    base = load_recipe(RECIPE).model_dump(mode="json")
    base["data"]["output"] = os.path.join(out, "data")  # prepared once, read by both searches
    base["train"].update(max_steps=args.steps, eval_every=args.eval_every, log_every=args.eval_every,
                         eval_batches=20, warmup_steps=min(20, args.steps // 10), min_lr=1e-5)
    runtime.connect()
    results = [search(base, out, "grid", "none", args), search(base, out, "asha", "asha", args)]
    print(json.dumps(results, indent=2))
    grid, asha = results
    print(f"\nASHA vs grid over {len(args.lrs) * len(args.layers)} configurations, {args.steps} steps each:")
    for r in results:
        print(f"  {r['search']:5s} best val_loss {r['best_val_loss']:.4f}  steps {r['steps_trained']:5d}  "
              f"trial CPU-s {r['trial_cpu_s']:7.1f}  wall {r['wall_s']:6.1f} s  stopped early {r['stopped_early']}")
    print(f"  ASHA used {asha['steps_trained'] / grid['steps_trained']:.0%} of grid's steps and "
          f"{asha['trial_cpu_s'] / max(grid['trial_cpu_s'], 1e-9):.0%} of its CPU-time")
    if args.json:
        runtime.write_json(args.json, results)


if __name__ == "__main__":
    main()
