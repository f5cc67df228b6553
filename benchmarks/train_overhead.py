"""Tokens/s of lmstack training (Ray Train, 1 worker, Ray Data feed) against a plain PyTorch loop.

Same model, batch, block size, optimizer and thread count; both skip their first steps (start-up).
Run: .venv/bin/python benchmarks/train_overhead.py [--steps 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from lmstack import runtime
from lmstack.config import validate_recipe
from lmstack.models import build_causal_lm
from lmstack.quickstart import stdlib_glob
from lmstack.tasks import get_spec
from lmstack.train.trainer import train


def recipe(run_dir: str, steps: int, threads: int):
    data = os.environ.get("LMSTACK_DATA")
    shakespeare = data and os.path.exists(f"{data}/tinyshakespeare/input.txt")
    return validate_recipe({
        "name": "train_overhead",
        "run_dir": run_dir,
        "data": {"paths": [f"{data}/tinyshakespeare/input.txt" if shakespeare else stdlib_glob()],
                 "max_files": 40, "block_size": 64, "split": "tail"},
        "tokenizer": {"kind": "char"},
        "model": {"n_layer": 4, "n_head": 4, "n_embd": 128},
        "train": {"num_workers": 1, "threads_per_worker": threads, "batch_size": 12, "max_steps": steps,
                  "eval_every": steps, "eval_batches": 1, "log_every": 25, "warmup_steps": 10},
    })


def plain_loop(r, info, steps: int, threads: int, skip: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    blocks = np.stack(pq.read_table(os.path.join(r.data_dir(), "train")).column("input_ids").to_numpy(
        zero_copy_only=False))
    data = torch.from_numpy(blocks.astype(np.int64))
    model = build_causal_lm(r.model, info["tokenizer"]["vocab_size"], info["block_size"], info["eos_id"])
    opt = torch.optim.AdamW(model.parameters(), lr=r.train.lr)
    bs = r.train.batch_size
    model.train()
    for step in range(steps):
        if step == skip:
            start = time.perf_counter()
        idx = torch.randint(0, len(data), (bs,))
        ids = data[idx]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (steps - skip) * bs * data.shape[1] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    runtime.connect()
    with tempfile.TemporaryDirectory() as tmp:
        r = recipe(tmp, args.steps, args.threads)
        info = get_spec("lm").prepare(r, log=lambda *_: None)
        train(r, log=lambda *_: None)
        rows = [json.loads(line) for line in open(os.path.join(tmp, "metrics.jsonl"))]
        windows = [row["tokens_per_s"] for row in rows if "tokens_per_s" in row][1:]  # skip start-up
        lmstack_tps = float(np.mean(windows))
        plain_tps = plain_loop(r, info, args.steps, args.threads, skip=25)
    print(json.dumps({"lmstack_tokens_per_s": round(lmstack_tps), "plain_tokens_per_s": round(plain_tps),
                      "ratio": round(lmstack_tps / plain_tps, 3), "threads": args.threads}))


if __name__ == "__main__":
    main()
