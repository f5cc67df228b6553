"""Recommend data, no Ray: the interaction readers and their rejects, the vocabulary, the leave-one-out
split and the packing of training rows."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmstack.tasks.recommend.data import Columns, read_file, read_sequences, user_sequences
from lmstack.tasks.recommend.metrics import FIRST_ITEM, PAD, UNK
from lmstack.tasks.recommend.prepare import _Encode, holds_out_val, leave_one_out, left_pad, pack, vocabulary


def _rows(path, fmt="auto", cols=Columns()):
    rows = list(read_file(str(path), fmt, cols))
    return [r for r in rows if not r["reject"]], [r for r in rows if r["reject"]]


def test_text_lines_keep_file_order_and_set_aside_malformed_lines(tmp_path):
    f = tmp_path / "inter.txt"
    f.write_bytes(b"u1 a\nu1 b\n\nu2 c extra\nonlyone\nu2 d\n\xff\xfe x\nu1 c\n")
    good, bad = _rows(f)
    assert [(r["user"], r["item"], r["line"]) for r in good] == [("u1", "a", 1), ("u1", "b", 2), ("u2", "d", 6),
                                                                 ("u1", "c", 8)]
    assert {r["line"]: r["reject"] for r in bad} == {
        3: "blank line", 4: "3 fields; expected 2 (user item)", 5: "1 fields; expected 2 (user item)",
        7: "undecodable bytes (not UTF-8)"}
    seqs, rejected = read_sequences(str(f), "auto", Columns())
    assert seqs == {"u1": ["a", "b", "c"], "u2": ["d"]}
    assert sum(rejected.values()) == 4


def test_text_lines_with_a_timestamp_are_ordered_by_it(tmp_path):
    f = tmp_path / "inter.txt"
    f.write_text("u1 late 30\nu1 early 10\nu1 mid 20\nu1 tie 20\nu1 bad notatime\n")
    good, bad = _rows(f, cols=Columns(time="ts"))
    assert user_sequences(good) == {"u1": ["early", "mid", "tie", "late"]}  # ties keep file order
    assert [r["reject"] for r in bad] == ["column 'ts' is not a timestamp"]


def test_jsonl_named_columns_missing_and_null_fields_are_rejects(tmp_path):
    f = tmp_path / "inter.jsonl"
    lines = [{"uid": 1, "iid": 10, "t": "2024-01-02T00:00:00"}, {"uid": 1, "iid": 11, "t": "2024-01-01T00:00:00"},
             {"uid": 2, "t": 5}, {"uid": None, "iid": 3, "t": 1}, {"uid": 2, "iid": 1.5, "t": 1}]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n[1, 2]\n")
    good, bad = _rows(f, cols=Columns("uid", "iid", "t"))
    assert user_sequences(good) == {"1": ["11", "10"]}
    reasons = sorted(r["reject"] for r in bad)
    assert reasons == sorted(["missing column 'iid'", "column 'uid' is empty, null or not an id",
                              "column 'iid' is empty, null or not an id", "malformed JSON: Expecting property name "
                              "enclosed in double quotes", "not a JSON object"])


def test_csv_and_parquet_read_named_columns_and_count_a_missing_column(tmp_path):
    csv = tmp_path / "inter.csv"
    csv.write_text("user,item,when\nu1,007,3\nu1,008,1\nu2,1,2,9\n")
    good, bad = _rows(csv, cols=Columns(time="when"))
    assert user_sequences(good) == {"u1": ["008", "007"]}  # ids stay text: the leading zeros survive
    assert [r["reject"] for r in bad] == ["malformed CSV row: wrong column count"]

    pq.write_table(pa.table({"user": ["a", "a", None], "item": [1, 2, 3]}), tmp_path / "inter.parquet")
    good, bad = _rows(tmp_path / "inter.parquet")
    assert user_sequences(good) == {"a": ["1", "2"]} and len(bad) == 1

    good, bad = _rows(tmp_path / "inter.parquet", cols=Columns(item="movie"))
    assert not good and len(bad) == 3  # every row of the file is counted, none silently dropped
    assert bad[0]["reject"] == "missing column 'movie' (columns: user, item)"


def test_an_unreadable_file_is_one_reject_not_a_crash(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    good, bad = _rows(tmp_path / "broken.parquet")
    assert not good and len(bad) == 1 and bad[0]["reject"].startswith("unreadable parquet file")


def test_vocabulary_reserves_padding_and_unknown_and_orders_by_popularity():
    vocab, counts = vocabulary({"b": (5, 3), "a": (5, 4), "c": (9, 7), "d": (1, 0)})
    assert vocab[PAD] == "<pad>" and vocab[UNK] == "<unk>"
    assert vocab[FIRST_ITEM:] == ["c", "a", "b", "d"]
    assert counts == [0, 0, 7, 4, 3, 0]


def test_leave_one_out_never_puts_a_target_in_the_training_history():
    rng = random.Random(1)
    for _ in range(200):
        seq = rng.sample(range(2, 60), rng.randint(3, 30))  # distinct items: a target is recognisable
        parts = leave_one_out(seq, max_len=8)
        assert parts["test"] == (seq[:-1], seq[-1])
        assert parts["val"] == (seq[:-2], seq[-2])
        if parts["train"] is None:
            assert len(seq) == 3
            continue
        inputs, nxt = parts["train"]
        assert seq[-1] not in inputs + nxt and seq[-2] not in inputs + nxt
        window = seq[:-2][-9:]  # the most recent max_len + 1 training items
        assert inputs == window[:-1] and nxt == window[1:] and len(inputs) <= 8


def test_pack_keeps_every_users_prefix_whole_and_right_aligned():
    rng = random.Random(2)
    pairs = []
    for _ in range(50):
        s = [rng.randrange(2, 99) for _ in range(rng.randint(2, 11))]
        pairs.append((s[:-1], s[1:]))
    rows = pack(pairs, max_len=10)
    total = sum(len(p[0]) for p in pairs)
    assert total == sum(sum(1 for x in r["seg"] if x) for r in rows)
    assert len(rows) <= 11 / 9 * -(-total // 10) + 1  # first-fit decreasing's bound: few padded slots
    unpacked = []
    for r in rows:
        assert all(len(r[k]) == 10 for k in r)
        for k in sorted(set(r["seg"]) - {0}):
            idx = [i for i, s in enumerate(r["seg"]) if s == k]
            assert idx == list(range(idx[0], idx[0] + len(idx)))  # contiguous
            assert [r["positions"][i] for i in idx] == list(range(10 - len(idx), 10))
            unpacked.append(([r["input_ids"][i] for i in idx], [r["pos"][i] for i in idx]))
    assert sorted(unpacked) == sorted(pairs)


def test_encode_builds_candidates_outside_the_users_items():
    items = [f"i{k}" for k in range(40)]
    index = {it: k + FIRST_ITEM for k, it in enumerate(items)}
    seqs = {"u1": ["i1", "i2", "i3", "i4", "i5"], "u2": ["i7", "i8", "i9"]}
    import numpy as np

    out = _Encode(index, len(items) + FIRST_ITEM, 4, 10, seed=0)(
        {"user": np.array(list(seqs)), "items": np.array(list(seqs.values()), dtype=object)})
    rows = [dict(zip(out, vals, strict=True)) for vals in zip(*out.values(), strict=True)]
    test = {r["user"]: r for r in rows if r["split"] == "test"}
    val = {r["user"]: r for r in rows if r["split"] == "val"}
    assert test["u1"]["target"] == index["i5"] and test["u1"]["input_ids"] == [index[i] for i in ("i1", "i2", "i3",
                                                                                                   "i4")]
    assert val["u1"]["target"] == index["i4"] and val["u1"]["input_ids"] == left_pad([index["i1"], index["i2"],
                                                                                      index["i3"]], 4)
    for user, r in {**test}.items():
        rated = {index[i] for i in seqs[user]}
        assert r["candidates"][0] == r["target"] and len(set(r["candidates"][1:])) == 10
        assert not rated & set(r["candidates"][1:])
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 1 and sum(1 for s in train[0]["seg"] if s) == 2  # u2's prefix has one item: no row


def test_val_holdout_trains_on_the_other_users_validation_targets_never_on_a_test_target():
    import numpy as np

    users = [f"u{k}" for k in range(400)]
    held = [u for u in users if holds_out_val(u, 0.25, seed=3)]
    assert 60 < len(held) < 140 and held == [u for u in users if holds_out_val(u, 0.25, seed=3)]
    assert all(holds_out_val(u, 1.0, seed=3) for u in users)
    seq = [2, 3, 4, 5, 6, 7]
    assert leave_one_out(seq, 8, hold_out_val=False) == {"train": ([2, 3, 4, 5], [3, 4, 5, 6]), "val": None,
                                                         "test": ([2, 3, 4, 5, 6], 7)}

    items = [f"i{k}" for k in range(200)]
    index = {it: k + FIRST_ITEM for k, it in enumerate(items)}
    seqs = {u: [f"i{5 * n + j}" for j in range(5)] for n, u in enumerate(users[:40])}  # no item shared
    out = _Encode(index, len(items) + FIRST_ITEM, 50, 10, seed=3, val_holdout=0.25)(
        {"user": np.array(list(seqs)), "items": np.array(list(seqs.values()), dtype=object)})
    rows = [dict(zip(out, vals, strict=True)) for vals in zip(*out.values(), strict=True)]
    assert sorted(r["user"] for r in rows if r["split"] == "val") == sorted(u for u in seqs if u in held)
    assert len([r for r in rows if r["split"] == "test"]) == 40
    trained = [(r["input_ids"][i], r["pos"][i]) for r in rows if r["split"] == "train"
               for i in range(50) if r["seg"][i]]
    n_pairs = sum(3 if u not in held else 2 for u in seqs)  # 5 items: 4 or 3 trained on, one pair fewer
    assert len(trained) == n_pairs
    for u, s in seqs.items():  # no user shares an item: a pair names its user
        ids = [index[i] for i in s]
        assert (ids[-2], ids[-1]) not in trained
        assert ((ids[-3], ids[-2]) in trained) == (u not in held)


@pytest.mark.parametrize("bad", [{"data": {"paths": ["x"], "format": "arrow"}},
                                 {"data": {"paths": ["x"], "folds": 3}},
                                 {"data": {"paths": ["x"]}, "recommend": {"min_interactions": 2}},
                                 {"data": {"paths": ["x"]}, "recommend": {"arch": "bert4rec"}}])
def test_recipe_errors_name_the_key(bad):
    import lmstack.tasks  # noqa: F401  (registers the task sections)
    from lmstack.config import RecipeError, validate_recipe

    with pytest.raises(RecipeError) as err:
        validate_recipe({"name": "r", "task": "recommend", **bad}, "r.yaml")
    assert str(err.value).startswith("r.yaml: ")
