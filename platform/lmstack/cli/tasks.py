"""Task verbs: `lmstack predict` on any exported model; the model's lmstack_model.json names its task,
and the task's spec its options (e.g. translate's --direction)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from lmstack.artifacts import model_task
from lmstack.cli.common import add_verb
from lmstack.tasks import get_spec


def add_task_options(parser: argparse.ArgumentParser, verb: str, model_dir: str) -> None:
    """Add the options of the model's task (its spec's add_cli_options) to `verb`'s subparser."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[verb]
    get_spec(model_task(model_dir)).add_cli_options(sub.add_argument_group("options of the model's task"))


def task_options(args: argparse.Namespace, task: str) -> dict[str, Any]:
    """The options the model's task declared, as given (tasks without options keep a plain signature)."""
    return {n: getattr(args, n) for n in get_spec(task).cli_option_names() if getattr(args, n, None) is not None}


def cmd_predict(args: argparse.Namespace) -> None:
    task = model_task(args.model)
    spec = get_spec(task)
    if not os.path.isfile(args.input):
        raise FileNotFoundError(f"--input {args.input} does not exist")
    with open(args.input, encoding="utf-8") as f:
        inputs = [line.rstrip("\r\n") for line in f if line.strip()]
    results = spec.predict(args.model, inputs, **task_options(args, task))
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
    print(json.dumps({"model": args.model, "task": task, "inputs": len(inputs), "output": args.output}))


def register(verbs) -> None:
    p = add_verb(verbs, "predict", cmd_predict, "run an exported model on one input per line; JSON lines out "
                 "(options of the model's task follow, e.g. --direction zh-en for translate)", recipe=False, cluster=False)
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--input", required=True, help="text file, one input per line")
    p.add_argument("--output", required=True, help="JSON lines file, one result per input")
