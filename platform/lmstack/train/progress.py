"""Training progress on the driver's console: rank 0 appends to metrics.jsonl, the driver follows the
file and prints one line per logged step (step, loss, items/s, ETA) and per evaluation (the task's
metrics). Workers print nothing, so the line is the same on a laptop and on a remote cluster, and it
appears once (not once from the worker and again echoed by Ray)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from lmstack import runtime

POLL_S = 1.0


def _fmt(key: str, value: Any) -> str:
    if key == "lr":
        return f"lr {value:.2e}"
    if isinstance(value, float):
        return f"{key} {value:.4f}"
    return f"{key} {value}"


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def format_row(row: dict[str, Any], max_steps: int, started: float, first_step: int) -> str:
    step = int(row.get("step", 0))
    parts = [f"step {step}/{max_steps}"]
    if "train_loss" in row:
        parts.append(_fmt("loss", row["train_loss"]))
    if "lr" in row:
        parts.append(_fmt("lr", row["lr"]))
    if isinstance(row.get("tokens_per_s"), (int, float)):
        parts.append(f"{row['tokens_per_s']:,.0f} items/s")
    done = step - first_step
    if 0 < done and step < max_steps:
        parts.append(f"ETA {_eta((time.time() - started) / done * (max_steps - step))}")
    evals = [_fmt(k, v) for k, v in row.items() if k.startswith("val_")]
    if evals:
        parts.append("eval: " + ", ".join(evals))
    return " · ".join(parts)


@contextlib.contextmanager
def follow(run_dir: str, max_steps: int, log: Callable[[str], None]) -> Iterator[None]:
    """Print the rows that appear in <run_dir>/metrics.jsonl while the block runs (and the last ones
    when it ends). A resumed run's earlier rows are not printed again."""
    path = runtime.join(run_dir, "metrics.jsonl")
    seen = _count(path)
    state = {"seen": seen, "first": None}
    stop = threading.Event()
    started = time.time()

    def emit() -> None:
        rows = _rows(path)
        for row in rows[state["seen"]:]:
            if state["first"] is None:
                state["first"] = int(row.get("step", 0)) - 1
            log(format_row(row, max_steps, started, state["first"]))
        state["seen"] = max(state["seen"], len(rows))

    def loop() -> None:
        while not stop.wait(POLL_S):
            with contextlib.suppress(Exception):  # a file mid-rewrite: read it at the next poll
                emit()

    thread = threading.Thread(target=loop, name="lmstack-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            emit()


def _rows(path: str) -> list[dict[str, Any]]:
    if not runtime.exists(path):
        return []
    return [json.loads(line) for line in runtime.read_text(path).splitlines() if line.strip()]


def _count(path: str) -> int:
    try:
        return len(_rows(path))
    except (OSError, ValueError):
        return 0
