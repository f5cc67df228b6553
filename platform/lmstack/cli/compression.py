"""Distillation and compression verbs: distill, compress, compare."""

from __future__ import annotations

import argparse
import sys

from lmstack.cli.common import add_verb, connect, print_json, recipe_from_args


def cmd_distill(args: argparse.Namespace) -> None:
    from lmstack.train.distill import distill

    recipe = recipe_from_args(args)
    if recipe.distill is None:
        from lmstack.config import RecipeError

        raise RecipeError(f"{args.recipe}: distill: section missing (teacher: MODEL_DIR, temperature, alpha)")
    connect(args)
    print_json(distill(recipe))


def cmd_compress(args: argparse.Namespace) -> None:
    from lmstack.compress import compress

    try:
        report = compress(args.model, args.method, args.output, amount=args.amount, structured=args.structured,
                          data=args.data, text_field=args.text_field, label_field=args.label_field,
                          batch_size=args.batch_size, seq_len=args.seq_len, runs=args.runs,
                          log=lambda m: print(m, file=sys.stderr))  # stdout: the JSON report only
    except ValueError as err:  # a bad option or unusable data: one line and exit 2, like other user errors
        print(f"lmstack compress: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print_json(report)


def cmd_compare(args: argparse.Namespace) -> None:
    from lmstack.compare import compare

    result = compare(args.runs, args.output, metric=args.metric)
    print(result["table"])
    print(f"\nwritten: {result['markdown']}, {result['chart']}")


def register(verbs) -> None:
    add_verb(verbs, "distill", cmd_distill,
             "train the recipe's (smaller) model against distill.teacher's logits on Ray Train")
    p = add_verb(verbs, "compress", cmd_compress, "int8-quantize or prune an exported model and measure it",
                 recipe=False, cluster=False)
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--method", required=True, choices=["int8", "prune"])
    p.add_argument("--amount", type=float, default=0.3, help="pruning: fraction of weights (or channels)")
    p.add_argument("--structured", action="store_true", help="pruning: whole output channels (L2 norm)")
    p.add_argument("--output", required=True, help="the compressed model directory to write")
    p.add_argument("--data", help="data to measure the metric change on: a prepared split (Parquet), "
                                  "JSONL/CSV (text + label for classifiers) or plain text (LMs)")
    p.add_argument("--text-field", default="text")
    p.add_argument("--label-field", default="label")
    p.add_argument("--batch-size", type=int, default=8, help="latency: rows in the fixed batch")
    p.add_argument("--seq-len", type=int, default=64, help="latency: tokens per row (at most the context)")
    p.add_argument("--runs", type=int, default=20, help="latency: timed runs (the median is reported)")
    p = add_verb(verbs, "compare", cmd_compare, "one table (and chart) of finetune/distill/compress runs",
                 recipe=False, cluster=False)
    p.add_argument("runs", nargs="+", help="run directories (with summary.json) or compressed model directories")
    p.add_argument("--output", default="runs/compare", help="where compare.md and compare.png go")
    p.add_argument("--metric", help="the metric column (default: val_macro_f1 where runs have it, else val_loss)")
