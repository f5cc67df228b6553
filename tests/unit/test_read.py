import gzip

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmstack.data.read import DataSourceError, list_files, read_file


def rows(path, fmt, field="text", unit="file"):
    return list(read_file(str(path), fmt, field, unit, None))


def test_jsonl_rejects_are_counted_with_line_and_bytes_add_up(tmp_path):
    raw = (
        b'{"text": "good one"}\n'
        b"{not json\n"
        b'{"other": 1}\n'
        b'{"text": 5}\n'
        b'{"text": "bad \xff byte"}\n'
        b'{"text": "good two"}\n'
    )
    path = tmp_path / "a.jsonl"
    path.write_bytes(raw)
    out = rows(path, "jsonl")
    kept = [r for r in out if r["reject"] is None]
    rejected = [r for r in out if r["reject"] is not None]
    assert [r["text"] for r in kept] == ["good one", "good two"]
    assert [(r["line"], r["reject"].split(":")[0]) for r in rejected] == [
        (2, "malformed JSON"),
        (3, "field 'text' missing from record"),
        (4, "field 'text' not a string in record"),
        (5, "undecodable bytes (not UTF-8) at line 1, byte 14"),
    ]
    assert sum(r["nbytes"] for r in kept) + sum(r["nbytes"] for r in rejected) == len(raw)
    assert all(r["source"] == str(path) for r in out)


@pytest.mark.parametrize("unit, expected", [("line", 4), ("paragraph", 2), ("file", 1)])
def test_text_units_cover_every_byte(tmp_path, unit, expected):
    raw = b"para one line a\nline b\n\npara two \xfe\n"
    path = tmp_path / "t.txt.gz"
    path.write_bytes(gzip.compress(raw))
    out = rows(path, "text", unit=unit)
    assert sum(r["nbytes"] for r in out) == len(raw)
    assert sum(1 for r in out if r["reject"] != "blank") == expected - (unit == "line")
    assert any("undecodable" in (r["reject"] or "") for r in out)


def test_parquet_csv_and_arrow(tmp_path):
    table = pa.table({"text": ["a", None, "c"], "n": [1, 2, 3]})
    pq.write_table(table, tmp_path / "x.parquet")
    out = rows(tmp_path / "x.parquet", "parquet")
    assert [r["text"] for r in out if r["reject"] is None] == ["a", "c"]
    assert [r["line"] for r in out if r["reject"]] == [1]

    (tmp_path / "x.csv").write_text('text,n\nhello,1\n"multi\nline",2\nbroken,3,extra\n')
    out = rows(tmp_path / "x.csv", "csv")
    assert [r["text"] for r in out if r["reject"] is None] == ["hello", "multi\nline"]
    # The header is a row of its own, so every byte of the file belongs to one row.
    assert [r["reject"] for r in out if r["reject"]] == ["CSV header", "malformed CSV row: wrong column count"]
    assert sum(r["nbytes"] for r in out) == (tmp_path / "x.csv").stat().st_size

    with pa.OSFile(str(tmp_path / "x.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    assert [r["text"] for r in rows(tmp_path / "x.arrow", "arrow") if r["reject"] is None] == ["a", "c"]

    out = rows(tmp_path / "x.parquet", "parquet", field="body")  # every row set aside, not one for the file
    assert len(out) == 3 and all(r["reject"].startswith("column 'body' missing") for r in out)
    # Every column counts: "a" + an int64, None + an int64, "c" + an int64.
    assert [r["nbytes"] for r in out] == [9, 8, 9]


def test_list_files_directories_globs_and_missing(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.txt", "d/sub/b.jsonl", "d/.hidden", "d/state.json"):
        (tmp_path / name).write_text("x")
    assert [p.rsplit("/", 1)[1] for p in list_files([str(tmp_path / "d")])] == ["a.txt", "b.jsonl"]
    assert len(list_files([str(tmp_path / "d" / "**" / "*.jsonl")])) == 1
    with pytest.raises(DataSourceError, match="nothing.txt' matches no files"):
        list_files([str(tmp_path / "nothing.txt")])


def test_hf_dataset_saved_on_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["one doc", "two doc"]}).save_to_disk(str(tmp_path / "hf"))
    files = list_files([str(tmp_path / "hf")])
    assert all(f.endswith(".arrow") for f in files)
    texts = [r["text"] for f in files for r in read_file(f, "arrow", "text", "file", None)]
    assert texts == ["one doc", "two doc"]


def _lines_gz(n: int) -> bytes:
    return gzip.compress(b"".join(b'{"text": "record %05d of the file"}\n' % i for i in range(n)), mtime=0)


def _check_bytes(out, read_bytes):
    assert sum(r["nbytes"] for r in out) == read_bytes


def test_truncated_gzip_keeps_every_record_before_the_cut(tmp_path):
    data = _lines_gz(3000)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    tally = {}
    out = list(read_file(str(path), "jsonl", "text", "file", None, tally))
    kept = [r["text"] for r in out if r["reject"] is None]
    assert len(kept) > 1000 and kept == [f"record {i:05d} of the file" for i in range(len(kept))]
    damage = [r for r in out if r["reject"] and "damaged gzip" in r["reject"]]
    assert len(damage) == 1 and "truncated" in damage[0]["reject"]
    assert tally["records"] == len(out) and tally["bytes"] == sum(r["nbytes"] for r in out)


def test_corrupt_gzip_is_a_reject_and_keeps_the_records_before_it(tmp_path):
    data = bytearray(_lines_gz(3000))
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(data))
    out = rows(path, "jsonl")
    kept = [r["text"] for r in out if r["reject"] is None]
    # Deflate notices damage only at its next invalid code (or the CRC at the end): what it decoded
    # before that is kept as read; the records before the damaged spot are intact.
    assert kept[:1000] == [f"record {i:05d} of the file" for i in range(1000)]
    assert [r["reject"].split(" after")[0] for r in out if r["reject"]][-1:] == ["damaged gzip"]

    (tmp_path / "not.txt.gz").write_bytes(b"plain text, not gzip\n")
    out = rows(tmp_path / "not.txt.gz", "text")
    assert len(out) == 1 and out[0]["reject"].startswith("damaged gzip")


def test_json_lines_that_crashed_the_reader_are_rejects(tmp_path):
    raw = (
        b'{"text": "fine"}\n'
        + b"[" * 100_000 + b"]" * 100_000 + b"\n"  # RecursionError in json
        + b'{"text": "lone \\ud800 surrogate"}\n'  # parses, then fails in pyarrow
        + b'{"text": "big", "n": ' + b"9" * 5000 + b"}\n"  # over Python's int digit limit
        + b'{"text": "also fine"}\n'
    )
    path = tmp_path / "nasty.jsonl"
    path.write_bytes(raw)
    out = rows(path, "jsonl")
    assert [r["text"] for r in out if r["reject"] is None] == ["fine", "also fine"]
    reasons = [r["reject"] for r in out if r["reject"]]
    assert reasons[0] == "malformed JSON: nested too deeply"
    assert "lone surrogate" in reasons[1] and reasons[2].startswith("malformed JSON")
    _check_bytes(out, len(raw))
    pa.table({"text": [r["text"] for r in out if r["reject"] is None]})  # what failed later in prepare


def test_gzip_bomb_is_read_up_to_the_limit_in_bounded_memory(tmp_path):
    import tracemalloc

    size = 64 << 20  # 64 MiB of text in a ~64 KiB file
    line = b"x" * 1023 + b"\n"
    path = tmp_path / "bomb.txt.gz"
    path.write_bytes(gzip.compress(line * (size // len(line)), compresslevel=9, mtime=0))
    tracemalloc.start()
    out = list(read_file(str(path), "text", "text", "line", 10_000))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes: the file was decompressed whole"
    kept = [r for r in out if r["reject"] is None]
    assert len(kept) == 9 and sum(r["nbytes"] for r in kept) == 9 * 1024
    rest = [r for r in out if r["reject"] and r["reject"].startswith("over max_bytes_per_file")]
    assert len(rest) == 1 and rest[0]["nbytes"] == size - 9 * 1024
    _check_bytes(out, size)


@pytest.mark.parametrize("fmt, name", [("text", "t.txt"), ("jsonl", "t.jsonl"), ("csv", "t.csv")])
def test_bytes_past_the_limit_are_counted_not_lost(tmp_path, fmt, name):
    body = "".join(f'{{"text": "doc {i}"}}\n' if fmt == "jsonl" else f"doc {i},{i}\n" for i in range(200))
    if fmt == "csv":
        body = "text,n\n" + body
    path = tmp_path / name
    path.write_text(body)
    out = list(read_file(str(path), fmt, "text", "line", 300))
    assert sum(r["nbytes"] for r in out if r["reject"] is None or r["reject"] == "CSV header") <= 300
    assert sum(1 for r in out if (r["reject"] or "").startswith("over max_bytes_per_file")) == 1
    _check_bytes(out, len(body))


def test_tables_count_every_column_and_reject_each_row_of_a_missing_column(tmp_path):
    body = "title,body\nfirst,some words\nsecond,more words here\n"
    (tmp_path / "x.csv").write_text(body)
    out = rows(tmp_path / "x.csv", "csv", field="text")
    assert [r["reject"].split(" (")[0] for r in out] == ["CSV header", "column 'text' missing", "column 'text' missing"]
    _check_bytes(out, len(body))
    out = rows(tmp_path / "x.csv", "csv", field="body")
    assert [(r["text"], r["nbytes"]) for r in out if r["reject"] is None] == [
        ("some words", len("first,some words\n")), ("more words here", len("second,more words here\n"))]

    pq.write_table(pa.table({"text": ["a" * 10] * 50, "meta": ["m" * 90] * 50}), tmp_path / "p.parquet",
                   row_group_size=10)
    out = list(read_file(str(tmp_path / "p.parquet"), "parquet", "text", "file", 1000))
    assert sum(r["reject"] is None for r in out) == 10  # 100 bytes a row, all columns
    assert out[-1]["reject"].startswith("over max_bytes_per_file") and out[-1]["nbytes"] == 4000


def test_a_damaged_parquet_file_is_one_reject(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"]}), tmp_path / "p.parquet")
    data = (tmp_path / "p.parquet").read_bytes()
    (tmp_path / "p.parquet").write_bytes(data[:-12])  # footer gone
    out = rows(tmp_path / "p.parquet", "parquet")
    assert len(out) == 1 and out[0]["reject"].startswith("damaged file")


@pytest.mark.parametrize("name, data", [("e.txt", b""), ("e.jsonl", b""), ("e.csv", b""),
                                        ("e.txt.gz", gzip.compress(b"", mtime=0))])
def test_an_empty_file_is_one_counted_reject(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    out = rows(tmp_path / name, {"e.txt": "text", "e.jsonl": "jsonl", "e.csv": "csv", "e.txt.gz": "text"}[name])
    assert [(r["reject"], r["nbytes"]) for r in out] == [("empty file", 0)]


def test_an_empty_parquet_table_is_one_counted_reject(tmp_path):
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "e.parquet")
    assert [r["reject"] for r in rows(tmp_path / "e.parquet", "parquet")] == ["empty file"]
