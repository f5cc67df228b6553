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
    assert [r["reject"] for r in out if r["reject"]] == ["malformed CSV row: wrong column count"]

    with pa.OSFile(str(tmp_path / "x.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    assert [r["text"] for r in rows(tmp_path / "x.arrow", "arrow") if r["reject"] is None] == ["a", "c"]

    out = rows(tmp_path / "x.parquet", "parquet", field="body")
    assert len(out) == 1 and out[0]["reject"].startswith("column 'body' missing")


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
