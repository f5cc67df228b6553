"""`lmstack <verb>`: one thin function per verb, each a call into the library.

Verbs live in groups (one module each under lmstack/cli/, each with `register(subparsers)`).
User errors (bad recipe key, missing file, malformed input) print one line and exit with 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lmstack.config import RecipeError
from lmstack.data.read import DataSourceError

VERB_GROUPS = ["core", "tuning", "cluster", "serving", "tasks", "compression", "transfer", "data"]
USER_ERRORS = (RecipeError, DataSourceError, FileNotFoundError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmstack", description="raw text to a served language model, on Ray")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for group in VERB_GROUPS:
        importlib.import_module(f"lmstack.cli.{group}").register(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if rest and getattr(args, "task_options", False) and getattr(args, "model", None):
            from lmstack.cli.tasks import parse_task_options

            args = parse_task_options(args.verb, args, rest)
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.fn(args)
    except USER_ERRORS as err:
        print(f"lmstack {args.verb}: error: {err}", file=sys.stderr)
        return 2
    return 0
