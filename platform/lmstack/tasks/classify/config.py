"""The classify recipe section: which fields hold the text and labels, and how examples are cut."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmstack.config import Recipe, Section


class ClassifyConfig(Section):
    """Task `classify`: which fields hold the text and the labels, and how examples are cut."""

    # A field name, or several tried in order (the first present wins); a list of strings is joined.
    text_field: str | list[str] = "text"
    # "@dir": the label is the name of the folder holding the file (e.g. one folder per class).
    label_field: str = "label"
    extra_label_fields: list[str] = Field(default_factory=list)  # more heads for strategy multitask
    max_length: int = Field(128, ge=2)  # tokens per example (clipped to the pretrained model's context)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: n / (classes * count) in the loss
    # Held out by a stable hash of the record id before the train/val (or k-fold) split.
    test_fraction: float = Field(0.0, ge=0, lt=1)
    max_per_class: int | None = Field(None, ge=1)  # deterministic subsample (lowest id hashes)
    # Also write `lm_text/`: the text of every record in the train split, labelled subsample or not, to
    # pretrain the LM that finetune.from_model loads (validation and test texts stay unseen); a char
    # tokenizer then covers its characters too.
    lm_text: bool = False


def check_recipe(recipe: Recipe) -> None:
    """Cross-section rules of a classify recipe (run by the recipe's validation)."""
    cfg = recipe.classify
    if recipe.finetune.strategy == "multitask" and not cfg.extra_label_fields:
        raise ValueError("strategy multitask needs classify.extra_label_fields")
    if cfg.lm_text and recipe.data.folds:
        raise ValueError("classify.lm_text needs a validation split: with data.folds every record "
                         "validates some fold, so no text is safe to pretrain on")
