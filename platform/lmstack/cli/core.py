"""Core verbs: prepare, train, evaluate, generate, quickstart, config show."""

from __future__ import annotations

import argparse

from lmstack.cli.common import add_verb, connect, print_json, print_result, recipe_from_args
from lmstack.config import dump_recipe


def cmd_prepare(args: argparse.Namespace) -> None:
    import time

    from lmstack import runtime
    from lmstack.data.read import list_files
    from lmstack.tasks import get_spec
    from lmstack.train.prepared import prepare_fresh

    recipe = recipe_from_args(args)
    connect(args)
    list_files(recipe.data.paths)  # before any cluster starts: a path that matches nothing is one line
    started = time.time()
    manifest = prepare_fresh(recipe, get_spec(recipe.task))
    # Each task's manifest names its own counts; these are the ones worth a glance.
    shown = ("documents", "tokens", "blocks", "records", "examples", "labels")
    figures = {"data_dir": recipe.data_dir()}
    for key in shown:
        value = manifest.get(key)
        if key == "documents" and isinstance(value, dict):
            figures.update(value)
        elif value is not None:
            figures[key] = value
    print_json(runtime.write_summary(recipe.data_dir(), "prepare", figures, started))


def cmd_train(args: argparse.Namespace) -> None:
    from lmstack.train.trainer import train

    recipe = recipe_from_args(args)
    connect(args)
    print_json(train(recipe))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from lmstack.evaluate.split import evaluate

    if args.data or not args.recipe:  # a model and a data file, no recipe: the model's task scores it
        return _evaluate_file(args)
    recipe = recipe_from_args(args)
    connect(args)
    print_json(evaluate(recipe, model_dir=args.model, run_dir=args.run_dir and f"{args.run_dir}/evaluate",
                    max_batches=args.max_batches))


def _evaluate_file(args: argparse.Namespace) -> None:
    import json

    from lmstack.artifacts import model_task
    from lmstack.cli.tasks import task_options
    from lmstack.tasks import get_spec

    if not args.model or not args.data:
        raise FileNotFoundError("evaluate: give a recipe, or both --model DIR and --data FILE")
    task = model_task(args.model)
    # One JSON object on the last line, so scripts can read the metrics with `tail -1`.
    print_result(json.dumps(get_spec(task).evaluate_file(args.model, args.data, **task_options(args, task))))


def cmd_generate(args: argparse.Namespace) -> None:
    from lmstack.models.generate import generate

    print_result(generate(args.model, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))


def cmd_quickstart(args: argparse.Namespace) -> None:
    from lmstack.quickstart import quickstart

    connect(args)
    quickstart(data=args.data, run_dir=args.run_dir, overrides=args.overrides)


def cmd_config_show(args: argparse.Namespace) -> None:
    print(dump_recipe(recipe_from_args(args)), end="")


def register(verbs) -> None:
    add_verb(verbs, "prepare", cmd_prepare, "read, clean, dedup, tokenize and pack the recipe's data")
    add_verb(verbs, "train", cmd_train, "train (or resume) the recipe's model on Ray Train and export it")
    p = add_verb(verbs, "evaluate", cmd_evaluate, "evaluate an exported model on the validation split, "
                 "or (--model DIR --data FILE, no recipe) on a data file with the model's task metrics",
                 recipe=False)
    p.add_argument("recipe", nargs="?", help="recipe YAML file (its validation split, task metrics)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--model", help="model directory (default: <run dir>/model)")
    p.add_argument("--data", help="data file in the model task's format (e.g. cmn.txt for translate)")
    p.add_argument("--max-batches", type=int)
    p = add_verb(verbs, "generate", cmd_generate, "sample text from an exported model", recipe=False, cluster=False)
    p.add_argument("model", help="exported model directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int)
    p = add_verb(verbs, "quickstart", cmd_quickstart, "raw text to generated text on the embedded cluster",
                 recipe=False)
    p.add_argument("--data", help="text to train on (default: the Python standard library's source)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    config = verbs.add_parser("config", help="recipe tools").add_subparsers(dest="config_verb", required=True)
    show = config.add_parser("show", help="print the resolved recipe")
    show.add_argument("recipe")
    show.add_argument("overrides", nargs="*")
    show.set_defaults(fn=cmd_config_show, run_dir=None)
