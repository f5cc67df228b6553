"""Durable, append-only record of served completions and the feedback given on them (SQLite).

One file, `<feedback_dir>/feedback.sqlite`, in WAL mode so several ingress replicas on a node can
write at once. Rows are only ever inserted: a rating changed later is a second row, and the export
keeps the latest. Replicas open the file on start, so a restarted replica sees everything before it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    request_id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    endpoint TEXT NOT NULL, prompt TEXT NOT NULL, completion TEXT NOT NULL, params TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, request_id TEXT NOT NULL,
    rating REAL, correction TEXT, comment TEXT, user TEXT);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id);
"""
FILENAME = "feedback.sqlite"


class FeedbackStore:
    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, FILENAME)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a committed row survives the replica's process dying (the case that matters
        # here) without an fsync per served request; only a machine crash can lose the last commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def log_completion(self, request_id: str, model: str, version: str, endpoint: str, prompt: str,
                       completion: str, params: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (request_id, time.time(), model, version, endpoint, prompt, completion,
                              json.dumps(params)))

    def forget_before(self, cutoff: float) -> int:
        """Delete stored completions (prompts) older than `cutoff` (epoch seconds) and their feedback."""
        with self._lock:
            self._db.execute("DELETE FROM feedback WHERE request_id IN "
                             "(SELECT request_id FROM completions WHERE created < ?)", (cutoff,))
            return self._db.execute("DELETE FROM completions WHERE created < ?", (cutoff,)).rowcount

    def has_request(self, request_id: str) -> bool:
        with self._lock:
            row = self._db.execute("SELECT 1 FROM completions WHERE request_id = ?", (request_id,)).fetchone()
        return row is not None

    def add_feedback(self, request_id: str, rating: float | None, correction: str | None,
                     comment: str | None, user: str | None) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO feedback (created, request_id, rating, correction, comment, user) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), request_id, rating, correction, comment, user))
            return int(cur.lastrowid)

    def close(self) -> None:
        self._db.close()


def export_rows(directory: str) -> list[dict[str, Any]]:
    """One row per request that has feedback: the latest rating and correction given, and `text`,
    the prompt followed by the correction if there is one, else the completion - the column a
    recipe (`data.text_field: text`) trains on."""
    path = os.path.join(directory, FILENAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no feedback store at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("""
            SELECT f.request_id, c.model, c.version, c.endpoint, c.prompt, c.completion,
                   f.rating, f.correction, f.comment, f.created
            FROM feedback f LEFT JOIN completions c USING (request_id) ORDER BY f.id""").fetchall()
    finally:
        db.close()
    merged: dict[str, dict[str, Any]] = {}
    for rid, model, version, endpoint, prompt, completion, rating, correction, comment, created in rows:
        row = merged.setdefault(rid, {"request_id": rid, "model": model, "version": version,
                                      "endpoint": endpoint, "prompt": prompt or "", "completion": completion or "",
                                      "rating": None, "correction": None, "comment": None, "feedback_count": 0})
        row["feedback_count"] += 1
        row["updated"] = created
        for key, value in (("rating", rating), ("correction", correction), ("comment", comment)):
            if value is not None:
                row[key] = value
    for row in merged.values():
        row["text"] = row["prompt"] + (row["correction"] if row["correction"] is not None else row["completion"])
    return list(merged.values())


def export(directory: str, output: str, fmt: str | None = None, min_rating: float | None = None) -> dict[str, Any]:
    """Write the feedback as JSONL or Parquet (by `fmt` or the output's suffix); returns counts."""
    rows = export_rows(directory)
    if min_rating is not None:
        # Corrections are kept whatever the rating: a corrected answer is the one to learn.
        rows = [r for r in rows if r["correction"] is not None or (r["rating"] is not None and r["rating"] >= min_rating)]
    fmt = fmt or ("parquet" if output.endswith(".parquet") else "jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), output)
    else:
        with open(output, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"output": output, "format": fmt, "rows": len(rows),
            "corrections": sum(r["correction"] is not None for r in rows)}
