"""Checks that a distillation teacher reads the data the way the student does."""

from __future__ import annotations

import os
from typing import Any

from lmstack.config import RecipeError


def check_same_tokenizer(teacher_dir: str, info: dict[str, Any]) -> None:
    """Fail with one line unless the teacher's tokenizer is the prepared data's, token for token."""
    from transformers import AutoConfig

    from lmstack.data.tokenizer import load_tokenizer

    if not os.path.isdir(teacher_dir):
        raise FileNotFoundError(f"distill.teacher: model directory {teacher_dir!r} does not exist")
    teacher_cfg = AutoConfig.from_pretrained(teacher_dir, local_files_only=True)
    vocab = info["tokenizer"]["vocab_size"]
    if teacher_cfg.vocab_size < vocab:
        raise RecipeError(
            f"distill.teacher: {teacher_dir} has a vocabulary of {teacher_cfg.vocab_size} tokens, the data's "
            f"tokenizer {vocab}: teacher and student must share the tokenizer (tokenizer.kind: pretrained, "
            f"path: the teacher's directory)"
        )
    theirs = load_tokenizer(teacher_dir).get_vocab()
    ours = load_tokenizer(info["tokenizer"]["dir"]).get_vocab()
    if theirs != ours:
        differ = sorted(set(theirs.items()) ^ set(ours.items()), key=str)[:3]
        raise RecipeError(
            f"distill.teacher: the tokenizer in {teacher_dir} differs from the data's ({info['tokenizer']['dir']}), "
            f"e.g. {differ}: teacher and student must share the tokenizer"
        )
