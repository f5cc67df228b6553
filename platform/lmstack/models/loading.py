"""The one way a model directory's weights are loaded: local files only, and only from safetensors.

Pickle formats (pytorch_model.bin, *.pt) can run code when loaded; a model directory may come from a
shared bucket or a download, so every loader (training from `model.path` / `finetune.from_model`,
serving, generate, evaluate, compress) goes through here and refuses anything else in one line.
"""

from __future__ import annotations

import os
from typing import Any

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


class UnsafeModelError(ValueError):
    """A model directory whose weights are not in safetensors."""


def require_safetensors(path: str, what: str = "model directory") -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    if not any(os.path.isfile(os.path.join(path, name)) for name in SAFE_WEIGHTS):
        found = ", ".join(sorted(n for n in os.listdir(path) if n.endswith((".bin", ".pt", ".pth", ".ckpt")))) or "none"
        raise UnsafeModelError(
            f"{what} {path!r}: no model.safetensors (weights found: {found}); weights load only from "
            "safetensors, since pickle formats can run code: re-save it with save_pretrained(safe_serialization=True)")


def load_pretrained(cls: Any, path: str, what: str = "model directory", **kwargs: Any) -> Any:
    """`cls.from_pretrained(path)` for a local directory whose weights are safetensors, or a one-line refusal."""
    require_safetensors(path, what)
    kwargs.pop("use_safetensors", None)
    return cls.from_pretrained(path, local_files_only=True, use_safetensors=True, **kwargs)
