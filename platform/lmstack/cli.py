"""`lmstack <verb>`: one thin function per verb, each a call into the library.

User errors (bad recipe key, missing file, malformed input) print one line and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lmstack.config import RecipeError, dump_recipe, load_recipe
from lmstack.data.read import DataSourceError

USER_ERRORS = (RecipeError, DataSourceError, FileNotFoundError)


def _recipe(args: argparse.Namespace):
    recipe = load_recipe(args.recipe, args.overrides)
    if getattr(args, "run_dir", None):
        recipe = recipe.model_copy(update={"run_dir": args.run_dir})
    return recipe


def _connect(args: argparse.Namespace) -> None:
    from lmstack import runtime

    runtime.connect(address=getattr(args, "address", None))


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_prepare(args: argparse.Namespace) -> None:
    import time

    from lmstack import runtime
    from lmstack.data.prepare import prepare

    recipe = _recipe(args)
    _connect(args)
    started = time.time()
    manifest = prepare(recipe)
    figures = {"data_dir": recipe.data_dir(), **manifest["documents"], "tokens": manifest["tokens"],
               "blocks": manifest["blocks"]}
    _print(runtime.write_summary(recipe.data_dir(), "prepare", figures, started))


def cmd_train(args: argparse.Namespace) -> None:
    from lmstack.train.trainer import train

    recipe = _recipe(args)
    _connect(args)
    _print(train(recipe))


def cmd_evaluate(args: argparse.Namespace) -> None:
    from lmstack.evaluate.lm import evaluate

    recipe = _recipe(args)
    _connect(args)
    _print(evaluate(recipe, model_dir=args.model, run_dir=args.run_dir and f"{args.run_dir}/evaluate",
                    max_batches=args.max_batches))


def cmd_generate(args: argparse.Namespace) -> None:
    from lmstack.models.generate import generate

    print(generate(args.model, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))


def cmd_quickstart(args: argparse.Namespace) -> None:
    from lmstack.quickstart import quickstart

    _connect(args)
    quickstart(data=args.data, run_dir=args.run_dir, overrides=args.overrides)


def cmd_config_show(args: argparse.Namespace) -> None:
    print(dump_recipe(_recipe(args)), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmstack", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    def verb(name: str, fn, help: str, recipe: bool = True, cluster: bool = True) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help)
        if recipe:
            p.add_argument("recipe", help="recipe YAML file")
            p.add_argument("overrides", nargs="*", help="section.key=value overrides")
        p.add_argument("--run-dir", help="output directory (default: runs/<recipe name>)")
        if cluster:
            p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or an embedded cluster)")
        p.set_defaults(fn=fn)
        return p

    verb("prepare", cmd_prepare, "read, clean, dedup, tokenize and pack the recipe's data")
    verb("train", cmd_train, "train (or resume) the recipe's model on Ray Train and export it")
    p = verb("evaluate", cmd_evaluate, "evaluate an exported model on the validation split")
    p.add_argument("--model", help="model directory (default: <run dir>/model)")
    p.add_argument("--max-batches", type=int)
    p = verb("generate", cmd_generate, "sample text from an exported model", recipe=False, cluster=False)
    p.add_argument("model", help="exported model directory")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--seed", type=int)
    p = verb("quickstart", cmd_quickstart, "raw text to generated text on the embedded cluster", recipe=False)
    p.add_argument("--data", help="text to train on (default: the Python standard library's source)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    config = verbs.add_parser("config", help="recipe tools").add_subparsers(dest="config_verb", required=True)
    show = config.add_parser("show", help="print the resolved recipe")
    show.add_argument("recipe")
    show.add_argument("overrides", nargs="*")
    show.set_defaults(fn=cmd_config_show, run_dir=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except USER_ERRORS as err:
        print(f"lmstack {args.verb}: error: {err}", file=sys.stderr)
        return 2
    return 0
