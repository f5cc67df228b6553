"""CPU latency of a model directory and its compressed versions over batch sizes and thread counts.

    python benchmarks/compress_latency.py MODEL_DIR [COMPRESSED_DIR ...] [--batch-sizes 1 8 32]
        [--threads 1 2] [--seq-len 64] [--runs 20]

Every directory is loaded the way lmstack serves it (lmstack.compress.load_model: plain, pruned or
int8) and timed on the same seeded batch: median milliseconds per forward pass, and the speed-up
against the first directory. One run each; on a shared machine, run it when the machine is quiet.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "platform"))

from lmstack.compress.load import context_length, load_model, load_tokenizer, weight_bytes  # noqa: E402
from lmstack.compress.report import cpu_latency, latency_batch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()

    models = [(d, load_model(d)) for d in args.dirs]
    pad = load_tokenizer(args.dirs[0]).pad_token_id
    seq = min(args.seq_len, context_length(models[0][1]))
    print("| model | weight bytes | batch | threads | median ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for bs in args.batch_sizes:
        for threads in args.threads:
            base = None
            for path, model in models:
                batch = latency_batch(model, None, bs, seq, pad)
                ms = cpu_latency(model, batch, runs=args.runs, threads=threads)["median_ms"]
                base = base or ms
                print(f"| {os.path.basename(os.path.normpath(path))} | {weight_bytes(path):,} | {bs} | {threads} "
                      f"| {ms:.2f} | {base / ms:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
