"""Read text, JSONL, Parquet, CSV and Arrow (HF datasets saved on disk) into document rows.

Each file becomes rows of {doc_id, text, source, line, nbytes, reject}. A row whose `reject` is set
holds what could not be used (undecodable bytes, malformed JSON, a missing field) and why; nothing
is silently dropped and nothing crashes the job. Files are listed on the driver (names only); their
contents are read by Ray tasks.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
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


class DataSourceError(ValueError):
    """A path in the recipe that matches nothing or cannot be listed."""


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


def _read_bytes(path: str, limit: int | None) -> bytes:
    fs, p = filesystem(path)
    with fs.open_input_stream(p, compression=None) as f:  # decompressed here, with a clear error
        data = f.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if limit is not None and len(data) > limit:
        cut = data.rfind(b"\n", 0, limit)
        data = data[: cut + 1 if cut > 0 else limit]
    return data


def _decode_error(raw: bytes, err: UnicodeDecodeError) -> str:
    line = raw.count(b"\n", 0, err.start) + 1
    return f"undecodable bytes (not UTF-8) at line {line}, byte {err.start}"


def _text_units(raw: bytes, unit: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) per document; every input byte belongs to one unit."""
    if unit == "file":
        yield 1, raw
        return
    lines = raw.splitlines(keepends=True)
    if unit == "line":
        for i, line in enumerate(lines, 1):
            yield i, line
        return
    start, chunk = 1, b""
    for i, line in enumerate(lines, 1):
        if not chunk:
            start = i
        chunk += line
        if not line.strip() and chunk.strip():
            yield start, chunk
            chunk = b""
    if chunk:
        yield start, chunk


def _read_text(path: str, unit: str, limit: int | None) -> Iterator[dict[str, Any]]:
    raw = _read_bytes(path, limit)
    for line, chunk in _text_units(raw, unit):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as err:
            reason = _decode_error(chunk, err)
            if unit != "file":
                reason = f"undecodable bytes (not UTF-8) at byte {err.start}"
            yield _row(path, line, chunk.decode("utf-8", "replace"), len(chunk), reason)
            continue
        if unit != "file" and not text.strip():
            yield _row(path, line, text, len(chunk), "blank")
            continue
        yield _row(path, line, text, len(chunk))


def _read_jsonl(path: str, field: str, limit: int | None) -> Iterator[dict[str, Any]]:
    raw = _read_bytes(path, limit)
    for i, chunk in enumerate(raw.splitlines(keepends=True), 1):
        if not chunk.strip():
            yield _row(path, i, "", len(chunk), "blank")
            continue
        try:
            record = json.loads(chunk.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield _row(path, i, chunk.decode("utf-8", "replace"), len(chunk), _decode_error(chunk, err))
            continue
        except json.JSONDecodeError as err:
            yield _row(path, i, chunk.decode("utf-8"), len(chunk), f"malformed JSON: {err.msg}")
            continue
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            why = "missing from" if not isinstance(record, dict) or field not in record else "not a string in"
            yield _row(path, i, chunk.decode("utf-8"), len(chunk), f"field {field!r} {why} record")
            continue
        yield _row(path, i, value, len(chunk))


def _table_rows(path: str, table: pa.Table, field: str, first_row: int) -> Iterator[dict[str, Any]]:
    if field not in table.column_names:
        yield _row(path, 0, "", 0, f"column {field!r} missing (columns: {', '.join(table.column_names)})")
        return
    for i, value in enumerate(table.column(field).to_pylist(), first_row):
        if not isinstance(value, str):
            yield _row(path, i, json.dumps(value, default=str), 0, f"field {field!r} is null or not text")
        else:
            yield _row(path, i, value, len(value.encode("utf-8")))


def _read_csv(path: str, field: str) -> Iterator[dict[str, Any]]:
    bad: list[Any] = []

    def on_invalid(row: Any) -> str:
        bad.append(row)
        return "skip"

    data = _read_bytes(path, None)
    table = pacsv.read_csv(
        io.BytesIO(data),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
    )
    for row in bad:
        text = row.text or ""
        yield _row(path, row.number or 0, text, len(text.encode()), "malformed CSV row: wrong column count")
    # Row numbers count the header as line 1.
    yield from _table_rows(path, table, field, 2)


def _read_arrow(path: str, field: str) -> Iterator[dict[str, Any]]:
    data = _read_bytes(path, None)
    try:
        table = pa.ipc.open_stream(data).read_all()  # what datasets.save_to_disk writes
    except pa.ArrowInvalid:
        table = pa.ipc.open_file(data).read_all()
    yield from _table_rows(path, table, field, 0)


def read_file(path: str, fmt: str, field: str, unit: str, limit: int | None) -> Iterator[dict[str, Any]]:
    """Rows from one file; an unreadable file is one reject row rather than a failed job."""
    try:
        if fmt == "text":
            yield from _read_text(path, unit, limit)
        elif fmt == "jsonl":
            yield from _read_jsonl(path, field, limit)
        elif fmt == "parquet":
            fs, p = filesystem(path)
            yield from _table_rows(path, pq.read_table(p, filesystem=fs, columns=None), field, 0)
        elif fmt == "csv":
            yield from _read_csv(path, field)
        elif fmt == "arrow":
            yield from _read_arrow(path, field)
        else:  # pragma: no cover - the recipe validates the format
            raise ValueError(fmt)
    except (OSError, pa.ArrowException, EOFError, gzip.BadGzipFile) as err:
        yield _row(path, 0, "", 0, f"unreadable {fmt} file: {err}")


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
