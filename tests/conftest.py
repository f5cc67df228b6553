"""Shared fixtures: one local Ray cluster per test session, tiny corpora and recipes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Test data builders live in tests/builders.py, shared by every tier (unit, ray, e2e).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from builders import make_corpus, tiny_recipe  # noqa: E402,F401  (re-exported: `from conftest import ...`)


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
