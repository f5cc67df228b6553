"""Shared fixtures: one local Ray cluster per test session, tiny corpora and recipes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from lmstack.config import validate_recipe

WORDS = (
    "the model reads text and learns which token comes next while the cluster shares the work "
    "across workers so every stage writes its result to storage for the next stage"
).split()


def make_corpus(root: Path, docs: int = 60, seed: int = 0) -> Path:
    """A small deterministic text corpus: one JSONL file and one directory of .txt files."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(30, 80))]
        lines.append('{"text": "' + " ".join(words) + '."}')
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    txt = root / "txt"
    txt.mkdir(exist_ok=True)
    for i in range(5):
        words = [rng.choice(WORDS) for _ in range(120)]
        (txt / f"{i}.txt").write_text(" ".join(words) + "\n")
    return root


def tiny_recipe(tmp: Path, data: Path, **train) -> object:
    raw = {
        "name": "tiny",
        "run_dir": str(tmp / "run"),
        "data": {"paths": [str(data)], "block_size": 32, "val_fraction": 0.2},
        "tokenizer": {"kind": "char"},
        "model": {"family": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16},
        "train": {
            "num_workers": 2, "batch_size": 4, "max_steps": 20, "lr": 3e-3, "min_lr": 3e-4,
            "warmup_steps": 2, "eval_every": 10, "eval_batches": 4, "log_every": 5, **train,
        },
    }
    return validate_recipe(raw, "test")


@pytest.fixture(scope="session")
def ray_cluster():
    """One embedded Ray cluster for the whole session, shut down through Ray's own call."""
    import ray

    from lmstack import runtime

    os.environ.setdefault("LMSTACK_PROGRESS", "0")
    runtime.connect(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = os.environ.get("LMSTACK_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("LMSTACK_DATA is not set to the shared data sets folder (../shared/datasets)")
    return Path(root)
