"""SASRec vs GRU4Rec vs popularity on the SASRec Video (Amazon Video Games) data, side by side.

    LMSTACK_DATA=../shared/datasets nice -n 10 .venv/bin/python benchmarks/recommend_video.py \
        [--archs sasrec,gru4rec,popularity] [--max-steps 6000] [--json out.json]

Prepares the data once with the recommend task's own Ray Data prepare (leave-one-out: each user's last
item is the test target, the one before it validation), then trains each model in process with a plain
loop over the task's own loss (the spec's loss(), the same code the Ray trainer calls), keeps the
checkpoint with the best validation NDCG@10 (early stopping), exports it with the spec, and scores the
held-out test targets with `evaluate_file` (what `lmstack evaluate --model DIR --data test_history.txt
--targets test_targets.txt` prints): HR@10 / NDCG@10 among 100 sampled never-interacted items (the
SASRec protocol, fixed seed) and with full ranking over every item. Prints one JSON table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def recipe_for(args: argparse.Namespace, arch: str, data_dir: str) -> Any:
    from lmstack.config import validate_recipe

    layers = args.gru_layers if arch == "gru4rec" else args.layers
    return validate_recipe({
        "name": f"bench_{arch}", "task": "recommend", "run_dir": os.path.join(args.work, arch),
        "data": {"paths": [args.data], "format": "text", "output": data_dir},
        "model": {"n_embd": args.d, "n_layer": layers, "n_head": args.heads, "dropout": args.dropout},
        "train": {"batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
                  "max_steps": args.max_steps, "warmup_steps": min(args.warmup, args.max_steps)},
        "recommend": {"arch": arch, "max_len": args.max_len, "loss": args.loss,
                      "num_negatives": args.negatives, "val_holdout": args.val_holdout},
    }, "benchmark")


def load_split(data_dir: str, split: str, cols: list[str]) -> dict[str, torch.Tensor]:
    table = pq.read_table(os.path.join(data_dir, split), columns=cols)
    return {c: torch.tensor(np.array(table.column(c).to_pylist(), dtype=np.int64)) for c in cols}


def validate(spec: Any, model: torch.nn.Module, val: dict[str, torch.Tensor], bs: int = 1024) -> dict[str, float]:
    model.eval()
    loss_sum, count, counts = 0.0, 0, np.zeros(3)
    with torch.no_grad():
        for s in range(0, len(val["input_ids"]), bs):
            batch = {k: v[s:s + bs] for k, v in val.items()}
            loss, n = spec.loss(model, batch)
            loss_sum += float(loss) * n
            count += n
            counts += spec.eval_counts(model, batch)
    model.train()
    return spec.metrics(loss_sum, count, {}, counts=counts)


def train_one(args: argparse.Namespace, arch: str, data_dir: str, info: dict[str, Any]) -> dict[str, Any]:
    from lmstack.tasks import get_spec
    from lmstack.tasks.recommend.predict import evaluate_file

    spec = get_spec("recommend")
    recipe = recipe_for(args, arch, data_dir)
    torch.manual_seed(args.seed)
    model = spec.build_model(recipe, info)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    train = load_split(data_dir, "train", ["input_ids", "pos", "seg", "positions"])
    val = load_split(data_dir, "val", ["input_ids", "candidates"])
    if args.val_users and args.val_users < len(val["input_ids"]):  # a fixed subset picks the checkpoint
        pick = torch.randperm(len(val["input_ids"]), generator=torch.Generator().manual_seed(1))[: args.val_users]
        val = {k: v[pick] for k, v in val.items()}
    # Users of similar history length share a batch, so trimming leading padding saves most compute.
    order = (val["input_ids"] != 0).sum(1).argsort()
    val = {k: v[order] for k, v in val.items()}
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    steps = 1 if arch == "popularity" else args.max_steps
    warmup = min(args.warmup, steps)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps - warmup)
        return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(args.seed)
    n_rows = len(train["pos"])
    best: dict[str, Any] = {"val_ndcg@10": -1.0}
    history, bad_evals = [], 0
    started, cpu_started = time.time(), time.process_time()
    perm, at = torch.randperm(n_rows, generator=gen), 0
    model.train()
    for step in range(1, steps + 1):
        if at + args.batch_size > n_rows:  # a new epoch: a new order
            perm, at = torch.randperm(n_rows, generator=gen), 0
        idx = perm[at:at + args.batch_size]
        at += args.batch_size
        loss, _ = spec.loss(model, {k: v[idx] for k, v in train.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == steps:
            row = {"step": step, "train_loss": round(loss.item(), 4), "seconds": round(time.time() - started, 1),
                   **{k: round(v, 4) for k, v in validate(spec, model, val).items()}}
            history.append(row)
            print(arch, json.dumps(row), flush=True)
            if row["val_ndcg@10"] > best["val_ndcg@10"]:
                best = {**row, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                bad_evals = 0
            else:
                bad_evals += 1
                if bad_evals >= args.patience:
                    break
            if time.time() - started > args.time_budget:
                print(arch, f"time budget of {args.time_budget}s reached", flush=True)
                break
    train_s, train_cpu_s = time.time() - started, time.process_time() - cpu_started
    model.load_state_dict(best.pop("state"))
    model.eval()
    out_dir = os.path.join(args.work, arch, "model")
    os.makedirs(out_dir, exist_ok=True)
    spec.export(model, out_dir)
    spec.export_assets(info, out_dir)
    with open(os.path.join(out_dir, "lmstack_model.json"), "w") as f:
        json.dump({"task": "recommend", "recipe": recipe.model_dump(mode="json"), "steps": best["step"]}, f)
    files = info["eval_files"]["test"]
    test = evaluate_file(out_dir, files["history"], targets=files["targets"])
    return {"arch": arch, "params": params, "train_s": round(train_s, 1),
            "train_cpu_s": round(train_cpu_s, 1), "best_step": best["step"],
            "steps_run": history[-1]["step"], "val_users": best["val_users"], "val_ndcg@10": best["val_ndcg@10"], "val_hr@10": best["val_hr@10"],
            "test_hr@10": test["hr@10"], "test_ndcg@10": test["ndcg@10"], "test_full_hr@10": test["full_hr@10"],
            "test_full_ndcg@10": test["full_ndcg@10"], "test_users": test["users"], "model_dir": out_dir}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = os.path.join(os.environ.get("LMSTACK_DATA", ""), "sasrec-video", "Video.txt")
    ap.add_argument("--data", default=default_data, help="interactions (`user item` lines in time order)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "recommend_video"))
    ap.add_argument("--archs", default="popularity,sasrec,gru4rec")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--val-holdout", type=float, default=1.0,
                    help="share of users whose validation target is held out (recommend.val_holdout); "
                         "the others train on it")
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--gru-layers", type=int, default=1)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.5)
    ap.add_argument("--loss", choices=["bce", "sampled_softmax"], default="sampled_softmax")
    ap.add_argument("--negatives", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--max-steps", type=int, default=6000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--val-users", type=int, default=None,
                    help="validate on this many users (a fixed random subset) to pick the checkpoint; default all")
    ap.add_argument("--time-budget", type=float, default=1800, help="seconds of training per model at most")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the table here")
    args = ap.parse_args()
    if not os.path.isfile(args.data):
        sys.exit(f"{args.data} not found: set LMSTACK_DATA or give --data")
    torch.set_num_threads(args.threads)

    from lmstack import runtime
    from lmstack.tasks import get_spec

    data_dir = os.path.join(args.work, f"data_len{args.max_len}_holdout{args.val_holdout:g}")
    recipe = recipe_for(args, "sasrec", data_dir)
    spec = get_spec("recommend")
    manifest = os.path.join(data_dir, "manifest.json")
    info = runtime.read_json(manifest) if os.path.isfile(manifest) else None
    if info is None or info.get("prepare_hash") != spec.prepare_hash(recipe):
        os.environ.setdefault("LMSTACK_PROGRESS", "0")
        runtime.connect(num_cpus=2)
        info = spec.prepare(recipe)
        import ray

        ray.shutdown()
    rows = [train_one(args, arch, data_dir, info) for arch in args.archs.split(",")]
    table = {"data": args.data, "users": info["users"]["kept"], "items": info["items"],
             "settings": {k: v for k, v in vars(args).items() if k not in ("data", "work", "json")},
             "load_average": round(os.getloadavg()[0], 1), "cpus": os.cpu_count(), "results": rows,
             "published_sasrec": {"hr@10": 0.7318, "ndcg@10": 0.5308, "source": "pmixer/SASRec.pytorch"}}
    print(json.dumps(table, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    main()
