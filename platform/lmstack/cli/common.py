"""Helpers every verb group shares: recipe loading with overrides, Ray connection, output."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lmstack.config import Recipe, load_recipe


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    recipe = load_recipe(args.recipe, args.overrides)
    if getattr(args, "run_dir", None):
        recipe = recipe.model_copy(update={"run_dir": args.run_dir})
    return recipe


def connect(args: argparse.Namespace) -> None:
    """Record the verb's cluster (--address); the library connects when it first needs it."""
    from lmstack import runtime

    runtime.use_address(getattr(args, "address", None))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def add_verb(verbs, name: str, fn, help: str, recipe: bool = True, cluster: bool = True) -> argparse.ArgumentParser:
    """A subcommand with the options every verb shares (recipe + overrides, --run-dir, --address)."""
    p = verbs.add_parser(name, help=help)
    if recipe:
        p.add_argument("recipe", help="recipe YAML file")
        p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--run-dir", help="output directory (default: runs/<recipe name>)")
    if cluster:
        p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or an embedded cluster)")
    p.set_defaults(fn=fn)
    return p
