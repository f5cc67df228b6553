"""Labelled records from JSON (arrays or lines), JSONL, CSV and Parquet, with reject accounting.

Every record becomes either an example {id, text, label, extra labels} or a reject {source, record,
reason, raw}: nothing is dropped silently and a malformed file or record never stops the job.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from lmstack import runtime
from lmstack.data.read import ByteStream, encodable, list_files
from lmstack.tasks.classify.config import ClassifyConfig

DIR_LABEL = "@dir"
READABLE = (".json", ".jsonl", ".ndjson", ".csv", ".parquet")


@dataclass
class Records:
    examples: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)

    def reject(self, source: str, record: int | None, reason: str, raw: Any = None) -> None:
        text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False, default=str)
        text = (text or "").encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # lone surrogates
        self.rejects.append({"source": source, "record": record, "reason": reason, "raw": (text or "")[:500]})


def _read_bytes(path: str) -> bytes:
    fs, p = runtime.filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def _rows(path: str, out: Records) -> Iterator[tuple[int, Any]]:
    """(record number, row) for every record of a file; unreadable parts go to out.rejects."""
    name = path[:-3] if path.endswith(".gz") else path
    ext = os.path.splitext(name)[1].lower()
    if ext == ".parquet":
        try:
            table = pq.read_table(io.BytesIO(_read_bytes(path)))
        except Exception as err:  # noqa: BLE001 - any unreadable file is a reject, not a crash
            out.reject(path, None, f"unreadable parquet: {err}")
            return
        yield from enumerate(table.to_pylist())
        return
    stream = ByteStream(path)  # a .gz streamed: damage keeps what came before it, as a reject
    data = b"".join(stream.chunks())
    if stream.damage:
        out.reject(path, None, stream.damage)
        data = data[: data.rfind(b"\n") + 1]  # the cut record is part of the damage
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if ext in (".csv", ".json"):
            out.reject(path, None, f"not UTF-8: {err.reason} at byte {err.start}")
            return
        text = None  # JSON lines: decoded line by line below, a bad line set aside alone
    if text is None:
        for i, raw in enumerate(data.splitlines()):
            try:
                line = raw.decode("utf-8-sig")
            except UnicodeDecodeError as err:
                out.reject(path, i, f"not UTF-8: {err.reason} at byte {err.start}", raw.decode("utf-8", "replace"))
                continue
            yield from _json_line(path, i, line, out)
        return
    if ext == ".csv":
        for i, row in enumerate(csv.DictReader(io.StringIO(text))):
            if None in row:  # more cells than header names
                out.reject(path, i, "malformed CSV row: more cells than columns", row.get(None))
                continue
            yield i, row
        return
    if ext == ".json":  # a JSON array (or one object); JSON lines in a .json file are read as lines
        try:
            whole = json.loads(text)
        except (ValueError, RecursionError):
            whole = None
        if isinstance(whole, list):
            yield from enumerate(whole)
            return
        if isinstance(whole, dict):
            yield 0, whole
            return
    for i, line in enumerate(text.splitlines()):
        yield from _json_line(path, i, line, out)


def _json_line(path: str, i: int, line: str, out: Records) -> Iterator[tuple[int, Any]]:
    if not line.strip():
        return
    try:
        yield i, json.loads(line)
    except RecursionError:
        out.reject(path, i, "malformed JSON: nested too deeply", line)
    except ValueError as err:  # JSONDecodeError, and ints over Python's digit limit
        out.reject(path, i, f"malformed JSON: {getattr(err, 'msg', str(err))}", line)


def _text_of(row: dict[str, Any], fields: list[str]) -> str | None:
    for name in fields:
        value = row.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            value = "\n".join(str(v) for v in value if v is not None)
        value = str(value).strip()
        if value and encodable(value):
            return value
    return None



def _label_of(row: dict[str, Any], name: str, path: str) -> str | None:
    if name == DIR_LABEL:
        return os.path.basename(os.path.dirname(path.rstrip("/"))) or None
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()) or isinstance(value, (list, dict)):
        return None
    value = str(value).strip()
    return value if encodable(value) else None


def read_records(paths: list[str], cfg: ClassifyConfig, fmt: str = "auto", max_files: int | None = None) -> Records:
    """Every labelled example of `paths` (files, folders, globs); the rest, counted, in rejects."""
    fields = [cfg.text_field] if isinstance(cfg.text_field, str) else list(cfg.text_field)
    out = Records()
    for path in list_files(paths, fmt, max_files):
        if not path.lower().removesuffix(".gz").endswith(READABLE):
            # Beside the data (README, LICENSE): counted as one reject per file, never read as records.
            out.reject(path, None, "unsupported file type (json, jsonl, csv, parquet are read)")
            continue
        for i, row in _rows(path, out):
            if not isinstance(row, dict):
                out.reject(path, i, "record is not an object", row)
                continue
            text = _text_of(row, fields)
            if text is None:
                out.reject(path, i, f"missing text field {'/'.join(fields)}", row)
                continue
            label = _label_of(row, cfg.label_field, path)
            if label is None:
                out.reject(path, i, f"missing label field {cfg.label_field}", row)
                continue
            rid = str(row["id"]) if row.get("id") not in (None, "") else ""
            rid = rid if rid and encodable(rid) else f"{os.path.basename(path)}#{i}"
            extra = {f: _label_of(row, f, path) for f in cfg.extra_label_fields}
            out.examples.append({"id": rid, "text": text, "label": label, "source": path, "record": i,
                                 **{f"label_{f}": v for f, v in extra.items()}})
    return out


def unit_hash(record_id: str, salt: str = "") -> float:
    """A stable number in [0, 1) for a record id: the same record lands in the same split everywhere."""
    digest = hashlib.blake2b(f"{salt}{record_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_split(record_id: str, test_fraction: float, val_fraction: float, folds: int | None) -> tuple[str, int]:
    """("test" | "train" | "val" | "cv", fold): test by one hash; val or a fold by an independent one."""
    if unit_hash(record_id, "test:") < test_fraction:
        return "test", -1
    u = unit_hash(record_id, "split:")
    if folds:
        return "cv", min(int(u * folds), folds - 1)
    return ("val" if u < val_fraction else "train"), -1


def subsample(examples: list[dict[str, Any]], max_per_class: int | None) -> list[dict[str, Any]]:
    """At most max_per_class examples of each label: the ones with the lowest id hashes (stable)."""
    if max_per_class is None:
        return examples
    by_label: dict[str, list[dict[str, Any]]] = {}
    for ex in examples:
        by_label.setdefault(ex["label"], []).append(ex)
    kept = []
    for group in by_label.values():
        kept.extend(sorted(group, key=lambda e: unit_hash(e["id"], "sample:"))[:max_per_class])
    return sorted(kept, key=lambda e: (e["source"], e["record"]))
