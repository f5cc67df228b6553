"""Read text, JSONL, Parquet, CSV and Arrow (HF datasets saved on disk) into document rows.

Each file becomes rows of {doc_id, text, source, line, nbytes, reject}. A row whose `reject` is set
holds what could not be used (undecodable bytes, malformed JSON, a missing field, a damaged stream,
the part of a file past `max_bytes_per_file`) and why; nothing is silently dropped and nothing crashes
the job. Every byte a file yields (decompressed, for .gz) belongs to exactly one row, so per file
`sum(nbytes)` equals the bytes read: read_file checks it and reports the total through `tally`.
Files are streamed (a .gz is decompressed chunk by chunk, never whole), so a file over the limit or a
gzip bomb costs bounded memory; the rows before any damage are kept.
Files are listed on the driver (names only); their contents are read by Ray tasks.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import zlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lmstack.runtime import filesystem, is_uri

_EXT_FORMAT = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".csv": "csv",
    ".arrow": "arrow",
}
# Files a Hugging Face `save_to_disk` directory carries beside its .arrow shards.
_HF_METADATA = {"dataset_info.json", "state.json", "dataset_dict.json"}
_IN_CHUNK = 1 << 14  # compressed bytes fed per call: a corrupt spot loses at most one output chunk
_OUT_CHUNK = 1 << 16  # decompressed bytes per call: what bounds memory against a gzip bomb
_BATCH_ROWS = 1024
OVER_LIMIT = "over max_bytes_per_file"
NEWLINE = b"\n"


class DataSourceError(ValueError):
    """A path in the recipe that matches nothing or cannot be listed."""


class AccountingError(AssertionError):
    """The rows of a file do not add up to what was read from it: a bug, never a data problem."""


def file_format(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    name = path[:-3] if path.endswith(".gz") else path
    return _EXT_FORMAT.get(os.path.splitext(name)[1].lower(), "text")


def _walk(fs: pafs.FileSystem, root: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return [i.path for i in infos if i.type == pafs.FileType.File]


def list_files(paths: list[str], declared_format: str = "auto", max_files: int | None = None) -> list[str]:
    """Expand files, directories and globs into a sorted list; a path matching nothing is an error."""
    found: list[str] = []
    for spec in paths:
        if not is_uri(spec) and any(ch in spec for ch in "*?["):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        else:
            fs, p = filesystem(spec)
            info = fs.get_file_info(p)
            if info.type == pafs.FileType.Directory:
                matches = sorted(_walk(fs, p))
                if is_uri(spec):
                    scheme = spec.split("://", 1)[0]
                    matches = [f"{scheme}://{m}" for m in matches]
            elif info.type == pafs.FileType.File:
                matches = [spec if is_uri(spec) else p]
            else:
                matches = []
        matches = [
            m
            for m in matches
            if os.path.basename(m) not in _HF_METADATA and not os.path.basename(m).startswith(".")
        ]
        if not matches:
            raise DataSourceError(f"data.paths: {spec!r} matches no files")
        found.extend(matches)
    found = list(dict.fromkeys(found))
    return found[:max_files] if max_files else found


def doc_id(source: str, line: int) -> int:
    """A stable 63-bit id for the document starting at `line` of `source`."""
    digest = hashlib.blake2b(f"{source}\0{line}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _row(source: str, line: int, text: str | None, nbytes: int, reject: str | None = None) -> dict[str, Any]:
    return {
        "doc_id": doc_id(source, line),
        "text": text if reject is None else None,
        "source": source,
        "line": line,
        "nbytes": nbytes,
        "reject": reject,
        "raw": None if reject is None else (text or "")[:2000],
    }


class ByteStream:
    """The bytes of one file, decompressed incrementally when it ends in .gz.

    `chunks()` yields until the end or the first damage (a truncated or corrupt gzip, a read error);
    `damage` then says what happened. `consumed` counts every byte yielded. Public so other readers
    (classify, translate) stream the same way."""

    def __init__(self, path: str):
        self.path = path
        self.damage: str | None = None
        self.consumed = 0
        self._gz = path.endswith(".gz")

    def chunks(self) -> Iterator[bytes]:
        try:
            fs, p = filesystem(self.path)
            # .gz: decompressed here, chunk by chunk (damage keeps what came before); other codecs pyarrow
            # knows by extension (.bz2, .zst, .lz4) are streamed by pyarrow.
            with fs.open_input_stream(p, compression=None if self._gz else "detect") as f:
                source = self._gunzip(f) if self._gz else iter(lambda: f.read(_OUT_CHUNK), b"")
                for chunk in source:
                    self.consumed += len(chunk)
                    yield chunk
        except (OSError, EOFError, zlib.error, pa.ArrowException) as err:
            self.damage = f"damaged {'gzip' if self._gz else 'file'} after byte {self.consumed}: {err}"

    def _gunzip(self, f) -> Iterator[bytes]:
        d = zlib.decompressobj(wbits=31)
        pending = b""
        while True:
            if d.eof:  # a member ended: another may follow (concatenated gzip), or padding
                pending = d.unused_data + pending
                if not pending:
                    pending = f.read(_IN_CHUNK)
                if not pending:
                    return
                if not pending.startswith(b"\x1f\x8b"):
                    if pending.strip(b"\0"):
                        raise zlib.error("trailing bytes after the gzip stream")
                    return
                d = zlib.decompressobj(wbits=31)
            if not pending and not d.unconsumed_tail:
                pending = f.read(_IN_CHUNK)
                if not pending:
                    raise EOFError("compressed stream ends early (truncated)")
            data = d.unconsumed_tail or pending
            if not d.unconsumed_tail:
                pending = b""
            out = d.decompress(data, _OUT_CHUNK)
            if out:
                yield out


class _Source:
    """The lines of a file up to `limit` bytes, then rows for what was not read (the rest past the limit,
    a line cut by damage), so that every byte lands in one row. Lines are split as chunks arrive, and
    past the limit bytes are only counted, so memory stays bounded by the limit."""

    def __init__(self, path: str, limit: int | None):
        self.path = path
        self.stream = ByteStream(path)
        self.limit = limit
        self.partial = b""  # an unterminated last line before damage: not trusted as a record
        self.rest = 0  # bytes past the limit
        self.next_line = 1

    def _over(self, nbytes: int) -> bool:
        return self.limit is not None and self.taken + nbytes > self.limit

    def lines(self) -> Iterator[tuple[int, bytes]]:
        chunks = self.stream.chunks()
        self.taken = 0
        parts: list[bytes] = []  # the unterminated line so far, joined only at its newline (no quadratic copy)
        pending = 0
        for chunk in chunks:
            if b"\n" not in chunk:
                parts.append(chunk)
                pending += len(chunk)
                if self._over(pending):
                    self.rest = pending + sum(len(c) for c in chunks)
                    return
                continue
            *complete, tail = (b"".join(parts) + chunk).split(b"\n")
            parts, pending = [tail], len(tail)
            for k, part in enumerate(complete):
                if self._over(len(part) + 1):
                    unread = sum(len(p) + 1 for p in complete[k:]) + pending
                    self.rest = unread + sum(len(c) for c in chunks)
                    return
                self.taken += len(part) + 1
                yield self.next_line, part + b"\n"
                self.next_line += 1
            if self._over(pending):
                self.rest = pending + sum(len(c) for c in chunks)
                return
        last = b"".join(parts)
        if last and self.stream.damage:
            self.partial = last
        elif last:
            self.taken += len(last)
            yield self.next_line, last
            self.next_line += 1

    def tail_rows(self) -> Iterator[dict[str, Any]]:
        if self.rest:
            yield _row(self.path, self.next_line, None, self.rest,
                       f"{OVER_LIMIT} ({self.limit}): {self.rest} bytes not read")
        if self.stream.damage:
            text = self.partial.decode("utf-8", "replace")
            yield _row(self.path, self.next_line + bool(self.rest), text, len(self.partial), self.stream.damage)


def _undecodable(err: UnicodeDecodeError, raw: bytes | None = None) -> str:
    where = "" if raw is None else f"line {raw.count(NEWLINE, 0, err.start) + 1}, "
    return f"undecodable bytes (not UTF-8) at {where}byte {err.start}"


def _read_text(src: _Source, unit: str) -> Iterator[dict[str, Any]]:
    path = src.path

    def row(start: int, chunk: bytes) -> dict[str, Any]:
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as err:
            reason = _undecodable(err, chunk if unit == "file" else None)
            return _row(path, start, chunk.decode("utf-8", "replace"), len(chunk), reason)
        if unit != "file" and not text.strip():
            return _row(path, start, text, len(chunk), "blank")
        return _row(path, start, text, len(chunk))

    if unit == "line":
        for i, line in src.lines():
            yield row(i, line)
    else:
        start, parts = 1, []
        for i, line in src.lines():
            if not parts:
                start = i
            parts.append(line)
            if unit == "paragraph" and not line.strip() and b"".join(parts).strip():
                yield row(start, b"".join(parts))
                parts = []
        if parts:
            yield row(start, b"".join(parts))
    yield from src.tail_rows()


def decoded_lines(path: str, limit: int | None = None) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text, None) for each line of a text file (local, URI or .gz), or (line, None, reason)
    for a line that is not UTF-8, and last a (line, None, reason) for damage or the bytes past `limit`:
    the task readers (TSV pairs, sentence lists) set bad input aside as prepare does, never replace it."""
    src = _Source(path, limit)
    for i, raw in src.lines():
        try:
            yield i, raw.decode("utf-8"), None
        except UnicodeDecodeError as err:
            yield i, None, _undecodable(err)
    for row in src.tail_rows():
        yield row["line"], None, row["reject"]


def _json_text(chunk: bytes, field: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason) for one JSON line."""
    try:
        record = json.loads(chunk.decode("utf-8"))  # decoded first: loads(bytes) sniffs the encoding per line
    except UnicodeDecodeError as err:
        return None, _undecodable(err, chunk)
    except RecursionError:
        return None, "malformed JSON: nested too deeply"
    except ValueError as err:  # JSONDecodeError, and ints over Python's digit limit
        return None, f"malformed JSON: {getattr(err, 'msg', str(err))}"
    value = record.get(field) if isinstance(record, dict) else None
    if not isinstance(value, str):
        why = "missing from" if not isinstance(record, dict) or field not in record else "not a string in"
        return None, f"field {field!r} {why} record"
    if not encodable(value):
        return None, f"field {field!r} holds an invalid unicode escape (lone surrogate)"
    return value, None


def encodable(value: str) -> bool:
    """False for text holding a lone surrogate (a JSON "\\ud800" escape): it parses, then fails in pyarrow or
    a tokenizer, so every reader refuses it as a reject."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_jsonl(src: _Source, field: str) -> Iterator[dict[str, Any]]:
    path = src.path
    for i, chunk in src.lines():
        if not chunk.strip():
            yield _row(path, i, "", len(chunk), "blank")
            continue
        text, reason = _json_text(chunk, field)
        if reason:
            yield _row(path, i, chunk.decode("utf-8", "replace"), len(chunk), reason)
        else:
            yield _row(path, i, text, len(chunk))
    yield from src.tail_rows()


def _read_csv(src: _Source, field: str) -> Iterator[dict[str, Any]]:
    """CSV with exact bytes per row: the csv module pulls lines (a quoted value may span several), and
    the bytes of the lines each row took are its size. The header is a row of its own ("CSV header")."""
    path = src.path
    taken = [0, 0]  # bytes, line of the last pulled line

    def text_lines() -> Iterator[str]:
        for i, line in src.lines():
            taken[0] += len(line)
            taken[1] = i
            yield line.decode("utf-8", "surrogateescape")

    reader = csv.reader(text_lines())
    header: list[str] | None = None
    col = -1
    done, start = 0, 1
    while True:
        try:
            values = next(reader)
            reason = None
        except StopIteration:
            break
        except csv.Error as err:
            values, reason = None, f"malformed CSV row: {err}"
        nbytes, done = taken[0] - done, taken[0]
        raw = None if values is None else ",".join(values)
        line, start = start, taken[1] + 1
        if reason is None and header is None:
            header = values
            col = header.index(field) if field in header else -1
            yield _row(path, line, raw, nbytes, "CSV header")
            continue
        if reason is None and len(values) != len(header):
            reason = "malformed CSV row: wrong column count"
        elif reason is None and col < 0:
            reason = f"column {field!r} missing (columns: {', '.join(header)})"
        elif reason is None:
            value = values[col]
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                reason = "undecodable bytes (not UTF-8)"
            else:
                if value == "":
                    reason = f"field {field!r} is null or not text"
        if reason:
            yield _row(path, line, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                       if raw else "", nbytes, reason)
        else:
            yield _row(path, line, values[col], nbytes)
    yield from src.tail_rows()


def _row_sizes(batch: pa.RecordBatch) -> list[int]:
    """Bytes of each row across all columns: string/binary lengths, fixed widths, and the JSON size of
    nested values. Every column counts, not only the text field."""
    total = pa.array([0] * batch.num_rows, pa.int64())
    for column in batch.columns:
        t = column.type
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) \
                or pa.types.is_large_binary(t):
            size = pc.fill_null(pc.binary_length(column), 0)
        elif getattr(t, "bit_width", None) and t.bit_width >= 8:
            size = pc.if_else(pc.is_valid(column), t.bit_width // 8, 0)
        else:
            size = pa.array([0 if v is None else len(json.dumps(v, default=str)) for v in column.to_pylist()],
                            pa.int64())
        total = pc.add(total, pc.cast(size, pa.int64()))
    return total.to_pylist()


def _table_rows(path: str, batches: Iterator[pa.RecordBatch], field: str, limit: int | None
                ) -> Iterator[dict[str, Any]]:
    """Rows of record batches up to `limit` bytes; the rest counted as one row, a read error mid-file
    as another (the rows before it kept)."""
    line = taken = rest = rest_rows = 0
    damage = None
    try:
        for batch in batches:
            sizes = _row_sizes(batch)
            keep = len(sizes)
            if limit is not None:
                keep = 0
                while not rest_rows and keep < len(sizes) and taken + sizes[keep] <= limit:
                    taken += sizes[keep]
                    keep += 1
                rest += sum(sizes[keep:])
                rest_rows += len(sizes) - keep
            if field not in batch.schema.names:
                why = f"column {field!r} missing (columns: {', '.join(batch.schema.names)})"
                values: list[Any] = [None] * keep
            else:
                why, values = "", batch.column(field).slice(0, keep).to_pylist()
            for value, nbytes in zip(values, sizes[:keep], strict=True):
                if why or not isinstance(value, str):
                    yield _row(path, line, json.dumps(value, default=str), nbytes,
                               why or f"field {field!r} is null or not text")
                else:
                    yield _row(path, line, value, nbytes)
                line += 1
    except (OSError, pa.ArrowException) as err:
        damage = f"damaged file after row {line}: {err}"
    if rest_rows:
        yield _row(path, line, None, rest, f"{OVER_LIMIT} ({limit}): {rest_rows} rows, {rest} bytes not read")
    if damage:
        yield _row(path, line + 1, None, 0, damage)


def _parquet_batches(path: str) -> Iterator[pa.RecordBatch]:
    fs, p = filesystem(path)
    with fs.open_input_file(p) as f:
        yield from pq.ParquetFile(f).iter_batches(batch_size=_BATCH_ROWS)


def _arrow_batches(path: str) -> Iterator[pa.RecordBatch]:
    fs, p = filesystem(path)
    with fs.open_input_file(p) as f:
        try:
            reader = pa.ipc.open_stream(f)  # what datasets.save_to_disk writes
        except pa.ArrowInvalid:
            f.seek(0)
            file_reader = pa.ipc.open_file(f)
            for i in range(file_reader.num_record_batches):
                yield file_reader.get_batch(i)
            return
        yield from reader


def read_file(path: str, fmt: str, field: str, unit: str, limit: int | None,
              tally: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Rows from one file; damage becomes reject rows rather than a failed job. For streamed formats the
    rows' bytes are checked against the bytes the stream yielded. `tally`, if given, receives
    {"records", "bytes"} read from the file once the rows are exhausted."""
    src = _Source(path, limit) if fmt in ("text", "jsonl", "csv") else None
    if fmt == "text":
        rows = _read_text(src, unit)
    elif fmt == "jsonl":
        rows = _read_jsonl(src, field)
    elif fmt == "csv":
        rows = _read_csv(src, field)
    elif fmt in ("parquet", "arrow"):
        rows = _table_rows(path, (_parquet_batches if fmt == "parquet" else _arrow_batches)(path), field, limit)
    else:  # pragma: no cover - the recipe validates the format
        raise ValueError(fmt)
    records = nbytes = 0
    for row in rows:
        records += 1
        nbytes += row["nbytes"]
        yield row
    if records == 0:  # an empty file (or table) is still listed in the accounting, as one reject
        records += 1
        yield _row(path, 0, "", 0, "empty file")
    if src is not None and nbytes != src.stream.consumed:
        raise AccountingError(f"{path}: rows hold {nbytes} bytes but {src.stream.consumed} were read")
    if tally is not None:
        tally.update(records=records, bytes=nbytes)


def read_documents(
    paths: list[str],
    declared_format: str = "auto",
    text_field: str = "text",
    text_unit: str = "file",
    max_bytes_per_file: int | None = None,
    max_files: int | None = None,
):
    """A Ray Dataset of document rows (rejects included, marked) read in parallel by file."""
    import ray.data

    files = list_files(paths, declared_format, max_files)
    items = [{"path": f, "format": file_format(f, declared_format)} for f in files]

    def parse(item: dict[str, Any]) -> list[dict[str, Any]]:
        return list(read_file(item["path"], item["format"], text_field, text_unit, max_bytes_per_file))

    return ray.data.from_items(items, override_num_blocks=min(len(items), 64)).flat_map(parse)
