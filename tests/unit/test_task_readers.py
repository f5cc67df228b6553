"""The classify and translate readers set damaged input aside like prepare's: a damaged .gz, a deeply
nested or lone-surrogate JSON record, bytes that are not UTF-8 become counted rejects; what came before
the damage is kept; nothing crashes and nothing is replaced with U+FFFD."""

import gzip
import json

from lmstack.tasks.classify.config import ClassifyConfig
from lmstack.tasks.classify.records import read_records
from lmstack.tasks.translate.data import read_pairs


def _jsonl(n):
    return b"".join(json.dumps({"id": f"r{i}", "text": f"text {i}", "label": "ab"[i % 2]}).encode() + b"\n"
                    for i in range(n))


def test_classify_truncated_gzip_keeps_the_records_before_the_cut(tmp_path):
    data = gzip.compress(_jsonl(4000), mtime=0)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    out = read_records([str(tmp_path / "cut.jsonl.gz")], ClassifyConfig())
    assert len(out.examples) > 1000
    assert [e["id"] for e in out.examples] == [f"r{i}" for i in range(len(out.examples))]
    assert [r["reason"].split(" after")[0] for r in out.rejects] == ["damaged gzip"]


def test_classify_nasty_json_lines_are_rejects(tmp_path):
    raw = (_jsonl(2) + b"[" * 50_000 + b"]" * 50_000 + b"\n"
           + b'{"id": "s", "text": "lone \\ud800", "label": "a"}\n'
           + b'{"id": "\\udc00", "text": "fine text", "label": "b"}\n'
           + b'{"text": "bad \xff byte", "label": "a"}\n' + b'{"text": "ok", "label": "a", "n": ' + b"9" * 5000 + b"}\n")
    (tmp_path / "x.jsonl").write_bytes(raw)
    out = read_records([str(tmp_path / "x.jsonl")], ClassifyConfig())
    assert [e["text"] for e in out.examples] == ["text 0", "text 1", "fine text"]
    assert out.examples[-1]["id"] == "x.jsonl#4"  # an id that cannot be encoded is replaced, not hashed
    reasons = [r["reason"] for r in out.rejects]
    assert reasons[0] == "malformed JSON: nested too deeply"
    assert reasons[1] == "missing text field text"
    assert reasons[2].startswith("not UTF-8") and reasons[3].startswith("malformed JSON")
    json.dumps(out.rejects).encode("utf-8")  # rejects are writable


def test_translate_pairs_set_undecodable_lines_aside(tmp_path):
    raw = "Hi.\t嗨。\tCC\n".encode() + b"Bad \xff.\t\xe4\xbd\n" + "Run.\t跑。\tCC\n".encode()
    (tmp_path / "cmn.txt.gz").write_bytes(gzip.compress(raw))
    pairs, rejects = read_pairs(str(tmp_path / "cmn.txt.gz"))
    assert [(p["en"], p["zh"], p["line"]) for p in pairs] == [("Hi.", "嗨。", 1), ("Run.", "跑。", 3)]
    assert [(r["line"], r["reason"].split(" at ")[0]) for r in rejects] == [(2, "undecodable bytes (not UTF-8)")]


def test_translate_replica_refuses_an_untrained_direction_before_batching(tmp_path):
    """Raised inside @serve.batch, one bad direction failed every request batched with it; checked per
    request before batching, it fails alone (the batch never sees it)."""
    import asyncio

    import pytest

    from lmstack.tasks.translate.serve import Translator

    (tmp_path / "lmstack_model.json").write_text(json.dumps({"task": "translate",
                                                             "recipe": {"translate": {"directions": ["zh-en"]}}}))
    replica = Translator.func_or_class()
    replica.entry = {"name": "mt", "version": "1", "path": str(tmp_path)}
    batched = []

    async def fake_batch(item):  # stands in for the @serve.batch method: records what reaches a batch
        batched.append(item)
        return {"version": "1", "data": []}

    replica._batched = fake_batch
    with pytest.raises(ValueError, match=r"direction 'en-zh': model 'mt' translates \['zh-en'\]"):
        asyncio.run(replica.translate(["hello"], {"direction": "en-zh"}))
    assert batched == []
    asyncio.run(replica.translate(["你好"], {"direction": "zh-en"}))
    assert batched == [(["你好"], {"direction": "zh-en"})]


def test_speech_manifest_sets_bad_lines_aside(tmp_path):
    from lmstack.tasks.speech.sources import SourceSettings, list_utterances

    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "m.jsonl").write_bytes(
        b'{"audio": "a.wav", "text": "one two"}\n'
        b'{"audio": "a.wav", "text": "caf\xe9"}\n'  # Latin-1, not UTF-8
        + b"[" * 50_000 + b"\n"
        + b'{"audio": "a.wav", "text": "lone \\ud800"}\n')
    rows, rejects = list_utterances([str(tmp_path / "m.jsonl")], SourceSettings())
    assert [r["text"] for r in rows] == ["one two"]
    assert [r["detail"].split(" at ")[0].split(":")[0] for r in rejects] == [
        "not UTF-8", "not JSON", "line 4"]


def test_compress_eval_records_set_bad_lines_aside(tmp_path):
    from lmstack.compress.evaldata import _records

    (tmp_path / "e.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n' + b"[" * 50_000 + b"\n")
    rejects = []
    assert [t for _, t, _ in _records(str(tmp_path / "e.jsonl"), "text", None, rejects)] == ["fine"]
    assert [r["reason"].split(" at ")[0].split(":")[0] for r in rejects] == ["undecodable bytes (not UTF-8)",
                                                                             "not JSON"]


def test_recommend_reader_keeps_records_before_gzip_damage_and_rejects_nasty_json(tmp_path):
    from lmstack.tasks.recommend.data import Columns, read_file

    body = b"".join(b'{"user": "u%d", "item": "i%d"}\n' % (i, i) for i in range(4000))
    data = gzip.compress(body, mtime=0)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    rows = list(read_file(str(tmp_path / "cut.jsonl.gz"), "auto", Columns()))
    kept = [r["user"] for r in rows if not r["reject"]]
    assert len(kept) > 1000 and kept == [f"u{i}" for i in range(len(kept))]
    assert [r["reject"].split(" after")[0] for r in rows if r["reject"]] == ["damaged gzip"]

    (tmp_path / "x.jsonl").write_bytes(b'{"user": "a", "item": "b"}\n' + b"[" * 50_000 + b"\n"
                                       + b'{"user": "\\ud800", "item": "b"}\n' + b'{"user": 1' + b"0" * 5000 + b"}\n")
    rows = list(read_file(str(tmp_path / "x.jsonl"), "auto", Columns()))
    assert [r["user"] for r in rows if not r["reject"]] == ["a"]
    assert [r["reject"].split(":")[0] for r in rows if r["reject"]] == [
        "malformed JSON", "column 'user' is empty, null or not an id", "malformed JSON"]
