"""The recommend recipe section: input columns, sequence length, model kind, loss and evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmstack.config import Recipe, Section


class RecommendEvalConfig(Section):
    # The SASRec protocol: the target is ranked among this many items the user never interacted with,
    # drawn uniformly with a fixed seed (per user, so prepare and `lmstack evaluate` draw the same ones).
    num_negatives: int = Field(100, ge=1)
    seed: int = 0


class RecommendConfig(Section):
    """task: recommend. Interactions from data.paths: `user item [timestamp]` lines (data.format text or
    .txt files), or JSONL/CSV/Parquet records with the named columns."""

    user_column: str = "user"
    item_column: str = "item"
    # Optional: with it, each user's interactions are ordered by it (ties keep file order); without
    # it, file order is time order (the SASRec layout). In text lines the timestamp is a third field.
    time_column: str | None = None
    # Users with fewer interactions go to rejects/: leave-one-out needs a training item, a validation
    # target and a test target.
    min_interactions: int = Field(3, ge=3)
    max_len: int = Field(50, ge=2)  # most recent items the model sees
    # The share of users whose validation target stays held out to pick the checkpoint (and stop early);
    # the others' validation target joins their training sequence (their most recent interaction, the
    # one nearest the test target in time). 1.0: every validation target held out (the SASRec protocol's
    # split). Users are chosen by a hash of their id with eval.seed; test targets are never trained on.
    val_holdout: float = Field(1.0, gt=0.0, le=1.0)
    arch: Literal["sasrec", "gru4rec", "popularity"] = "sasrec"
    # bce: each position's next item against `num_negatives` uniform negatives of its own (SASRec).
    # sampled_softmax: cross-entropy of the next item against `num_negatives` uniform negatives
    # shared by the batch (accidental hits masked).
    loss: Literal["bce", "sampled_softmax"] = "sampled_softmax"
    num_negatives: int | None = Field(None, ge=1)  # default: 1 for bce, 256 for sampled_softmax
    eval: RecommendEvalConfig = RecommendEvalConfig()

    def negatives(self) -> int:
        return self.num_negatives or (1 if self.loss == "bce" else 256)


def check_recipe(recipe: Recipe) -> None:
    """Cross-section rules of a recommend recipe (run by the recipe's validation)."""
    if recipe.data.format == "arrow":
        raise ValueError("data.format: recommend reads text (`user item` lines), jsonl, csv or parquet")
    if recipe.data.folds is not None:
        raise ValueError("data.folds: recommend splits each user's history leave-one-out, not by folds")
