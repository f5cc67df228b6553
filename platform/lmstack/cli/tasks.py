"""Task verbs: `lmstack predict` on any exported model; the model's lmstack_model.json names its task."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from lmstack.cli.common import add_verb


def model_task(model_dir: str) -> str:
    path = os.path.join(model_dir, "lmstack_model.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: --model must be a directory exported by `lmstack train`")
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("task", "lm")


def task_options(args: argparse.Namespace, names: tuple[str, ...] = ("direction",)) -> dict[str, Any]:
    # Task-specific options travel only when given, so tasks without them keep a plain signature.
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def cmd_predict(args: argparse.Namespace) -> None:
    from lmstack.tasks import get_task

    task = get_task(model_task(args.model))
    if not hasattr(task, "predict"):
        raise FileNotFoundError(f"task {task.name!r} has no predict(); use `lmstack generate` for language models")
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input} does not exist")
    with open(args.input, encoding="utf-8") as f:
        texts = [line.rstrip("\r\n") for line in f if line.strip()]
    results = task.predict(args.model, texts, **task_options(args))
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    print(json.dumps({"model": args.model, "task": task.name, "inputs": len(texts), "output": args.output}))


def register(verbs) -> None:
    p = add_verb(verbs, "predict", cmd_predict, "run an exported model on one input per line; JSON lines out",
                 recipe=False, cluster=False)
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--input", required=True, help="text file, one input per line")
    p.add_argument("--output", required=True, help="JSON lines file, one result per input")
    p.add_argument("--direction", choices=["zh-en", "en-zh"], help="translation models: which way")
