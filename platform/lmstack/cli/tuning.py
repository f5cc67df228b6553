"""Tuning verbs: `lmstack tune`."""

from __future__ import annotations

import argparse

from lmstack.cli.common import add_verb, connect, print_json, recipe_from_args


def cmd_tune(args: argparse.Namespace) -> None:
    from lmstack.tune.tuner import tune_recipe

    recipe = recipe_from_args(args)
    connect(args)
    print_json(tune_recipe(recipe))


def register(verbs) -> None:
    add_verb(verbs, "tune", cmd_tune,
             "search the recipe's tune.space with Ray Tune (resumes in the same run dir); export the best")
