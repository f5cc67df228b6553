"""Interaction readers: `user item [timestamp]` lines, and JSONL/CSV/Parquet records with named columns.

Each file yields rows {user, item, ts, file, line, reject, raw}. A row whose `reject` is non-empty
could not be used (a malformed line, a missing or null column, a bad timestamp, undecodable bytes) and
says why; nothing is silently dropped and an unreadable file is one reject row, not a crashed job.
Columns always have the same types (empty strings, NaN) so Ray Data blocks share one schema.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lmstack.data.read import ByteStream, encodable, file_format
from lmstack.runtime import filesystem

FORMATS = ("text", "jsonl", "csv", "parquet")


@dataclass(frozen=True)
class Columns:
    user: str = "user"
    item: str = "item"
    time: str | None = None  # None: file order is time order


def _row(user: str, item: str, ts: float, file: int, line: int, reject: str = "", raw: str = "") -> dict[str, Any]:
    return {"user": user, "item": item, "ts": ts, "file": file, "line": line, "reject": reject, "raw": raw[:500]}


def _bad(file: int, line: int, reason: str, raw: str) -> dict[str, Any]:
    return _row("", "", math.nan, file, line, reason, raw)


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        out = float(str(value))
    except ValueError:
        import datetime as dt

        try:  # ISO 8601 dates are common in exported logs
            return dt.datetime.fromisoformat(str(value)).timestamp()
        except ValueError:
            return None
    return out if math.isfinite(out) else None


def _scalar_id(value: Any) -> str | None:
    """Users and items are ids: strings or integers (a float id like 3.0 reads as '3')."""
    if value is None or isinstance(value, (bool, list, dict)):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    text = str(value).strip()
    return text if text and encodable(text) else None


def _record(values: dict[str, Any], cols: Columns, file: int, line: int, raw: str) -> dict[str, Any]:
    missing = [c for c in (cols.user, cols.item, cols.time) if c is not None and c not in values]
    if missing:
        return _bad(file, line, f"missing column {missing[0]!r}", raw)
    user, item = _scalar_id(values[cols.user]), _scalar_id(values[cols.item])
    if user is None or item is None:
        which = cols.user if user is None else cols.item
        return _bad(file, line, f"column {which!r} is empty, null or not an id", raw)
    ts = 0.0
    if cols.time is not None:
        parsed = _timestamp(values[cols.time])
        if parsed is None:
            return _bad(file, line, f"column {cols.time!r} is not a timestamp", raw)
        ts = parsed
    return _row(user, item, ts, file, line)


def _lines(data: bytes) -> Iterator[tuple[int, str | None, bytes]]:
    for i, chunk in enumerate(data.splitlines(), 1):
        try:
            yield i, chunk.decode("utf-8"), chunk
        except UnicodeDecodeError:
            yield i, None, chunk


def read_text(data: bytes, cols: Columns, file: int) -> Iterator[dict[str, Any]]:
    """`user item` per line (whitespace separated); with a time column, `user item timestamp`."""
    want = 2 if cols.time is None else 3
    for i, text, chunk in _lines(data):
        if text is None:
            yield _bad(file, i, "undecodable bytes (not UTF-8)", chunk.decode("utf-8", "replace"))
            continue
        fields = text.split()
        if not fields:
            yield _bad(file, i, "blank line", text)
            continue
        if len(fields) != want:
            yield _bad(file, i, f"{len(fields)} fields; expected {want} ({'user item' + (' timestamp' * (want == 3))})",
                       text)
            continue
        values = {cols.user: fields[0], cols.item: fields[1]}
        if cols.time is not None:
            values[cols.time] = fields[2]
        yield _record(values, cols, file, i, text)


def read_jsonl(data: bytes, cols: Columns, file: int) -> Iterator[dict[str, Any]]:
    for i, text, chunk in _lines(data):
        if text is None:
            yield _bad(file, i, "undecodable bytes (not UTF-8)", chunk.decode("utf-8", "replace"))
            continue
        if not text.strip():
            yield _bad(file, i, "blank line", text)
            continue
        try:
            record = json.loads(text)
        except RecursionError:
            yield _bad(file, i, "malformed JSON: nested too deeply", text)
            continue
        except ValueError as err:  # JSONDecodeError, and ints over Python's digit limit
            yield _bad(file, i, f"malformed JSON: {getattr(err, 'msg', str(err))}", text)
            continue
        if not isinstance(record, dict):
            yield _bad(file, i, "not a JSON object", text)
            continue
        yield _record(record, cols, file, i, text)


def _table_rows(table: pa.Table, cols: Columns, file: int, first_line: int) -> Iterator[dict[str, Any]]:
    names = table.column_names
    missing = [c for c in (cols.user, cols.item, cols.time) if c is not None and c not in names]
    if missing:  # every row of the file lacks it: each is set aside and counted, the reason names it
        reason = f"missing column {missing[0]!r} (columns: {', '.join(names)})"
        for i in range(table.num_rows):
            yield _bad(file, i + first_line, reason, "")
        return
    wanted = [c for c in (cols.user, cols.item, cols.time) if c is not None]
    data = {c: table.column(c).to_pylist() for c in wanted}
    for i in range(table.num_rows):
        values = {c: data[c][i] for c in wanted}
        yield _record(values, cols, file, i + first_line, json.dumps(values, default=str))


def read_csv(data: bytes, cols: Columns, file: int) -> Iterator[dict[str, Any]]:
    bad: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad.append(row)
        return "skip"

    # Ids stay text (a leading zero is part of an id); the header is line 1.
    table = pacsv.read_csv(
        io.BytesIO(data),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={cols.user: pa.string(), cols.item: pa.string()}, strings_can_be_null=True),
    )
    for row in bad:
        yield _bad(file, row.number or 0, "malformed CSV row: wrong column count", row.text or "")
    yield from _table_rows(table, cols, file, 2)


def read_file(path: str, fmt: str, cols: Columns, file: int = 0) -> Iterator[dict[str, Any]]:
    """Interaction rows of one file (rejects included, marked); `file` is its index in the input list."""
    fmt = file_format(path, fmt)
    if fmt not in FORMATS:
        yield _bad(file, 0, f"format {fmt!r}: recommend reads {', '.join(FORMATS)}", path)
        return
    try:
        if fmt == "parquet":
            fs, p = filesystem(path)
            yield from _table_rows(pq.read_table(p, filesystem=fs), cols, file, 0)
            return
        stream = ByteStream(path)  # a .gz streamed: damage keeps the records before it
        data = b"".join(stream.chunks())
        if stream.damage:
            data = data[: data.rfind(b"\n") + 1]  # the record cut by the damage is part of it
        reader = {"text": read_text, "jsonl": read_jsonl, "csv": read_csv}[fmt]
        yield from reader(data, cols, file)
        if stream.damage:
            yield _bad(file, data.count(b"\n") + 1, stream.damage, path)
    except (OSError, pa.ArrowException, EOFError) as err:
        yield _bad(file, 0, f"unreadable {fmt} file: {err}", path)


def user_sequences(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Accepted rows -> each user's items in time order (timestamp, then file, then line)."""
    by_user: dict[str, list[tuple[float, int, int, str]]] = {}
    for r in rows:
        if not r["reject"]:
            by_user.setdefault(r["user"], []).append((r["ts"], r["file"], r["line"], r["item"]))
    return {u: [e[3] for e in sorted(events)] for u, events in by_user.items()}


def read_sequences(path: str, fmt: str, cols: Columns) -> tuple[dict[str, list[str]], dict[str, int]]:
    """One file, in process (for `lmstack evaluate`): user -> items in order, and rejects by reason."""
    rows = list(read_file(path, fmt, cols))
    rejected: dict[str, int] = {}
    for r in rows:
        if r["reject"]:
            rejected[r["reject"]] = rejected.get(r["reject"], 0) + 1
    return user_sequences(rows), rejected
