"""Helpers every verb group shares: recipe loading with overrides, Ray connection, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from lmstack.config import Recipe, load_recipe


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    recipe = load_recipe(args.recipe, args.overrides)
    if getattr(args, "run_dir", None):
        recipe = recipe.model_copy(update={"run_dir": args.run_dir})
    args.console_recipe = recipe  # the header and the Ray log file name it
    return recipe


def connect(args: argparse.Namespace) -> None:
    """Record the verb's cluster (--address) and where Ray's logs go (<run dir>/logs/ray.log unless -v),
    and print the verb's header; the library connects when it first needs it."""
    from lmstack import runtime

    address = getattr(args, "address", None)
    runtime.use_address(address)
    recipe = getattr(args, "console_recipe", None)
    run_dir = recipe.resolved_run_dir() if recipe is not None else (getattr(args, "run_dir", None) or "runs")
    log_file = os.path.join(run_dir, "logs", "ray.log")
    runtime.send_logs_to(None if getattr(args, "verbose", False) or runtime.is_uri(run_dir) else log_file)
    cluster = address or os.environ.get("RAY_ADDRESS") or "an embedded local Ray cluster (started on first use)"
    what = f"{recipe.name} (task {recipe.task})" if recipe is not None else ""
    print(f"lmstack {args.verb} {what}".rstrip() + f" · run dir {run_dir} · cluster {cluster}")
    if not getattr(args, "verbose", False):
        print(f"  Ray's logs: {log_file} (-v shows them here)")


def print_json(obj: Any) -> None:
    """The verb's result (the closing summary): printed even under --quiet."""
    print_result(json.dumps(obj, indent=2, default=str))


def print_result(text: str) -> None:
    """A verb's result on stdout, even under --quiet."""
    print(text, file=RESULTS.stream or sys.stdout)


class RESULTS:
    """Where results go when --quiet sends everything else to /dev/null (set by lmstack.cli.main)."""

    stream: Any = None


def add_verb(verbs, name: str, fn, help: str, recipe: bool = True, cluster: bool = True) -> argparse.ArgumentParser:
    """A subcommand with the options every verb shares (recipe + overrides, --run-dir, --address)."""
    p = verbs.add_parser(name, help=help)
    if recipe:
        p.add_argument("recipe", help="recipe YAML file")
        p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--run-dir", help="output directory (default: runs/<recipe name>)")
    if cluster:
        p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or an embedded cluster)")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-v", "--verbose", action="store_true", help="Ray's own logs on the terminal too")
    talk.add_argument("-q", "--quiet", action="store_true", help="print the closing summary only")
    p.set_defaults(fn=fn)
    return p
