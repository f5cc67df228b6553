"""The package's layers: imports point down only (cli -> stages -> tasks -> core), counting imports inside
functions, and generic code names no task. A new import that breaks this fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "platform" / "lmstack"
LAYERS = {
    "cli": 3,
    "train": 2, "tune": 2, "evaluate": 2, "compress": 2, "serve": 2, "quickstart": 2, "compare": 2, "cluster": 2,
    "tracking": 2,
    "tasks": 1,
    "config": 0, "runtime": 0, "artifacts": 0, "folds": 0, "data": 0, "models": 0, "api": 0,
}


def part(path: Path) -> str:
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "lmstack"]
        for name in names:
            bits = name.split(".")
            if bits[0] == "lmstack" and len(bits) > 1 and bits[1] in LAYERS:
                found.add(bits[1])
    return found


def modules():
    return [p for p in PKG.rglob("*.py") if part(p) not in ("__init__", "__main__")]


def test_every_part_has_a_layer():
    assert {part(p) for p in modules()} <= set(LAYERS)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path):
    here = part(path)
    up = [t for t in imported_parts(path) if t != here and LAYERS[t] > LAYERS[here]]
    assert not up, f"{path.relative_to(PKG)} imports the higher layer(s) {up}"


def test_generic_code_names_no_task():
    """Outside tasks/, no module compares against a task's name (they ask the task's spec)."""
    from lmstack.tasks import TASKS

    offenders = []
    for path in modules():
        if part(path) == "tasks":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                consts = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
                offenders += [f"{path.relative_to(PKG)}:{node.lineno}" for c in consts if c in TASKS]
    assert not offenders, offenders


def test_no_cycle_between_top_level_parts():
    import graphlib

    graph = {}
    for path in modules():
        graph.setdefault(part(path), set()).update(t for t in imported_parts(path) if t != part(path))
    graphlib.TopologicalSorter(graph).static_order()  # raises CycleError naming the cycle
