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
from lmstack.models.loading import UnsafeModelError

VERB_GROUPS = ["core", "tuning", "cluster", "serving", "tasks", "compression", "transfer", "data", "tracking"]
USER_ERRORS = (RecipeError, DataSourceError, FileNotFoundError, UnsafeModelError)
TASK_OPTION_VERBS = ("predict", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmstack", description="raw text to a served language model, on Ray")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for group in VERB_GROUPS:
        importlib.import_module(f"lmstack.cli.{group}").register(verbs)
    return parser


def _model_arg(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--model" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def _quietly(args: argparse.Namespace) -> None:
    """--quiet: progress and headers go nowhere; the result (print_json) and errors still show."""
    import contextlib
    import os

    from lmstack.cli.common import RESULTS

    RESULTS.stream = sys.stdout
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            args.fn(args)
    finally:
        RESULTS.stream = None


def user_error(err: BaseException) -> BaseException | None:
    """The user error behind `err`, if any: a RecipeError raised in a Ray worker reaches the driver wrapped
    (RayTaskError.cause, Train's WorkerGroupError.worker_failures, __cause__); it is still one line."""
    seen: set[int] = set()
    todo = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(e, USER_ERRORS) and not isinstance(cause, BaseException):
            return e
        todo += [cause, e.__cause__, e.__context__, getattr(e, "controller_failure", None),
                 *getattr(e, "worker_failures", {}).values()]
        todo = [t for t in todo if isinstance(t, BaseException)]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not {"-v", "--verbose"} & set(argv):
        import os

        # transformers' and the Hub's per-file bars ("Loading weights", "Writing model shards") on every load
        # and checkpoint; read when they are imported, and inherited by the Ray workers started from here.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:  # imported already: its switch was read at import
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    parser = build_parser()
    try:
        model = _model_arg(argv)
        if model and argv and argv[0] in TASK_OPTION_VERBS:
            # The --model's task adds its options (e.g. translate's --direction) to the verb before parsing,
            # so `--targets T` is an option's value, never mistaken for a positional argument.
            from lmstack.cli.tasks import add_task_options

            add_task_options(parser, argv[0], model)
        args = parser.parse_args(argv)
        if getattr(args, "quiet", False):
            _quietly(args)
        else:
            args.fn(args)
    except Exception as err:  # noqa: BLE001 - a user error (possibly wrapped by Ray) is one line; the rest re-raise
        found = user_error(err)
        if found is None:
            raise
        verb = argv[0] if argv else "lmstack"
        print(f"lmstack {verb}: error: {found}", file=sys.stderr)
        return 2
    return 0
