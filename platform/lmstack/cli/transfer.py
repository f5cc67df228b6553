"""Transfer verbs: `lmstack finetune` (a strategy of the recipe's finetune section, or k folds of it)."""

from __future__ import annotations

import argparse

from lmstack.cli.common import add_verb, connect, print_json, recipe_from_args
from lmstack.config import RecipeError


def cmd_finetune(args: argparse.Namespace) -> None:
    from lmstack.train.finetune import finetune, kfold

    recipe = recipe_from_args(args)
    if args.folds is not None and args.folds < 2:
        raise RecipeError(f"--folds {args.folds}: give at least 2 folds")
    connect(args)
    print_json(kfold(recipe, args.folds) if args.folds else finetune(recipe))


def register(verbs) -> None:
    p = add_verb(verbs, "finetune", cmd_finetune,
                 "transfer a pretrained lmstack model to the recipe's task (finetune section); write summary.json")
    p.add_argument("--folds", type=int, help="k-fold cross-validation: k runs in parallel, mean ± std of the "
                                             "task's metric")
