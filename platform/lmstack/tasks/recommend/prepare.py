"""Interactions -> per-user sequences (Ray Data) -> item vocabulary -> leave-one-out split -> Parquet.

Each user's last item is the test target, the one before it the validation target, the rest the
training history; with recommend.val_holdout < 1 only that share of users keeps the validation target
held out, the others train on it too. Written under recipe.data_dir():
  train/  input_ids, pos, seg, positions   users' training prefixes shifted by one, packed several
                                    to a row (left-padded; see pack())
  val/    user, input_ids, target, candidates    history up to the validation target (held-out users);
  test/   user, input_ids, target, candidates    candidates = [target] + the SASRec protocol's
                                    sampled negatives
  items.json                        the vocabulary (0 padding, 1 unknown), training counts, settings
  {val,test}_history.txt, {val,test}_targets.txt   the same splits as `user item` lines, for
                                    `lmstack evaluate --model DIR --data ..._history.txt --targets ...`
  rejects/rejects.jsonl, manifest.json
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import numpy as np
import pyarrow as pa

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.data.read import DataSourceError, list_files
from lmstack.tasks.recommend import data as rdata
from lmstack.tasks.recommend.metrics import FIRST_ITEM, PAD, sample_negatives

ROW_SCHEMA = pa.schema([("user", pa.string()), ("item", pa.string()), ("ts", pa.float64()), ("file", pa.int64()),
                        ("line", pa.int64()), ("reject", pa.string()), ("raw", pa.string())])
SEQ_SCHEMA = pa.schema([("user", pa.string()), ("items", pa.list_(pa.string())), ("n", pa.int64())])


def left_pad(ids: list[int], length: int) -> list[int]:
    ids = ids[-length:]
    return [PAD] * (length - len(ids)) + ids


def leave_one_out(ids: list[int], max_len: int, hold_out_val: bool = True) -> dict[str, Any]:
    """One user's sequence (>= 3 items) -> the training (inputs, next items) pair (None when the prefix
    has one item) and the validation and test (history, target) pairs. Without hold_out_val the
    validation target is trained on (the training pair runs up to it) and there is no validation pair."""
    train = ids[:-2 if hold_out_val else -1][-(max_len + 1):]
    return {
        "train": (train[:-1], train[1:]) if len(train) >= 2 else None,
        "val": (ids[:-2], ids[-2]) if hold_out_val else None,
        "test": (ids[:-1], ids[-1]),
    }


def holds_out_val(user: str, share: float, seed: int) -> bool:
    """Whether this user's validation target is held out (recommend.val_holdout): a hash of the user id,
    so every prepare worker decides alike whatever order users come in."""
    return share >= 1.0 or zlib.crc32(f"{seed}:{user}".encode()) < share * 2**32


def vocabulary(counts: dict[str, tuple[int, int]]) -> tuple[list[str], list[int]]:
    """item -> (interactions, interactions in training prefixes) => (id -> item, id -> training count).
    Id 0 is padding and 1 the unknown item; items follow by decreasing interactions, then by name."""
    order = sorted(counts, key=lambda item: (-counts[item][0], item))
    return ["<pad>", "<unk>", *order], [0, 0, *(counts[item][1] for item in order)]


def pack(pairs: list[tuple[list[int], list[int]]], max_len: int) -> list[dict[str, list[int]]]:
    """Several users' training (inputs, next items) per row, first-fit by decreasing length, right-aligned:
    a user's prefix averages a handful of items, so one user per max_len row would be mostly padding.
    seg numbers the users of a row (0 = padding); positions restart per user so that each user's
    latest item sits at max_len - 1, exactly where a served history's latest item sits."""
    bins: list[list[tuple[list[int], list[int]]]] = []
    room: list[int] = []
    for inputs, nxt in sorted(pairs, key=lambda p: -len(p[0])):
        n = len(inputs)
        slot = next((b for b, r in enumerate(room) if r >= n), None)
        if slot is None:
            bins.append([])
            room.append(max_len)
            slot = len(bins) - 1
        bins[slot].append((inputs, nxt))
        room[slot] -= n
    rows = []
    for content in bins:
        ids, pos, seg, positions = [], [], [], []
        for k, (inputs, nxt) in enumerate(content, 1):
            ids += inputs
            pos += nxt
            seg += [k] * len(inputs)
            positions += list(range(max_len - len(inputs), max_len))
        rows.append({"input_ids": left_pad(ids, max_len), "pos": left_pad(pos, max_len),
                     "seg": left_pad(seg, max_len), "positions": left_pad(positions, max_len)})
    return rows


def _parser(cols: rdata.Columns):
    def parse(batch: dict[str, np.ndarray]) -> pa.Table:
        rows = [r for path, fmt, i in zip(batch["path"], batch["format"], batch["index"], strict=True)
                for r in rdata.read_file(str(path), str(fmt), cols, int(i))]
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)  # an explicit schema even when empty

    return parse


def _sequence(group: pa.Table) -> pa.Table:
    order = sorted(zip(group["ts"].to_pylist(), group["file"].to_pylist(), group["line"].to_pylist(),
                       group["item"].to_pylist(), strict=True))
    items = [o[3] for o in order]
    return pa.Table.from_pylist([{"user": group["user"][0].as_py(), "items": items, "n": len(items)}],
                                schema=SEQ_SCHEMA)


class _Encode:
    """Sequences -> the three splits' rows (ids, padding, packing, sampled evaluation candidates)."""

    COLUMNS = ("split", "user", "input_ids", "pos", "seg", "positions", "target", "candidates")

    def __init__(self, index: dict[str, int], num_items: int, max_len: int, num_negatives: int, seed: int,
                 val_holdout: float = 1.0) -> None:
        self.index, self.num_items, self.max_len = index, num_items, max_len
        self.num_negatives, self.seed, self.val_holdout = num_negatives, seed, val_holdout

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        out: dict[str, list[Any]] = {k: [] for k in self.COLUMNS}
        zeros, no_candidates = [PAD] * self.max_len, [PAD] * (1 + self.num_negatives)
        train = []
        for user, items in zip(batch["user"], batch["items"], strict=True):
            ids = [self.index[i] for i in items]
            parts = leave_one_out(ids, self.max_len, holds_out_val(str(user), self.val_holdout, self.seed))
            if parts["train"] is not None:
                train.append(parts["train"])
            for split in ("val", "test"):
                if parts[split] is None:
                    continue
                history, target = parts[split]
                # Negatives avoid what the user had seen up to and including the target: exactly what
                # `lmstack evaluate` knows from the split's history and targets files, so it draws the same.
                negatives = sample_negatives(str(user), [*history, target], self.num_items, self.num_negatives,
                                             self.seed)
                self._add(out, split=split, user=str(user), input_ids=left_pad(history, self.max_len), pos=zeros,
                          seg=zeros, positions=zeros, target=target, candidates=[target, *negatives])
        for row in pack(train, self.max_len):
            self._add(out, split="train", user="", target=PAD, candidates=no_candidates, **row)
        return out

    @staticmethod
    def _add(out: dict[str, list[Any]], **values: Any) -> None:
        for key, value in values.items():
            out[key].append(value)


def _write_lines(path: str, pairs: list[tuple[str, str]]) -> None:
    runtime.write_text(path, "".join(f"{u} {i}\n" for u, i in pairs))


def prepare(recipe: Recipe, spec_hash: str, log: Any = print) -> dict[str, Any]:
    import ray.data

    started = time.time()
    cfg = recipe.recommend
    assert cfg is not None  # the recipe validator fills in the section for task recommend
    out = recipe.data_dir()
    for stale in ("train", "val", "test", "rejects", "items.json"):
        runtime.remove(runtime.join(out, stale))
    runtime.makedirs(out)
    cols = rdata.Columns(cfg.user_column, cfg.item_column, cfg.time_column)
    for spec in (cfg.user_column, cfg.item_column):
        if any(ch.isspace() for ch in spec):
            raise DataSourceError(f"recommend: column name {spec!r} has whitespace")

    files = list_files(recipe.data.paths, recipe.data.format, recipe.data.max_files)
    listing = [{"path": f, "format": recipe.data.format, "index": i} for i, f in enumerate(files)]
    rows = ray.data.from_items(listing, override_num_blocks=max(1, min(len(listing), 64))).map_batches(
        _parser(cols), batch_size=1, batch_format="numpy").materialize()
    n_lines = rows.count()
    rejects = rows.filter(lambda r: r["reject"] != "").take_all()
    accepted = n_lines - len(rejects)

    seqs = rows.filter(lambda r: r["reject"] == "").groupby("user").map_groups(_sequence, batch_format="pyarrow")
    seqs = seqs.materialize()
    short = seqs.filter(lambda r: r["n"] < cfg.min_interactions).take_all()
    for s in short:
        rejects.append({"user": s["user"], "item": "", "file": -1, "line": -1,
                        "reject": f"user with fewer than {cfg.min_interactions} interactions",
                        "raw": " ".join(s["items"]), "interactions": int(s["n"])})
    kept = seqs.filter(lambda r: r["n"] >= cfg.min_interactions).materialize()
    n_users = kept.count()
    if n_users == 0:
        reasons = _by_reason(rejects)
        raise DataSourceError(f"data.paths: no user with at least {cfg.min_interactions} usable interactions "
                              f"({n_lines} records read; rejects: {reasons})")

    # The vocabulary covers every kept item (targets too, as in SASRec: an item seen only as a target is
    # still a negative in training); popularity counts only the training prefixes, so no target leaks.
    def item_rows(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        items, train = [], []
        for user, seq in zip(batch["user"], batch["items"], strict=True):
            held = 2 if holds_out_val(str(user), cfg.val_holdout, cfg.eval.seed) else 1  # targets not trained on
            items.extend(seq)
            train.extend([1] * (len(seq) - held) + [0] * held)
        return {"item": items, "total": [1] * len(items), "train": train}

    counts = kept.map_batches(item_rows, batch_format="numpy").groupby("item").sum(["total", "train"]).take_all()
    vocab, train_counts = vocabulary({r["item"]: (int(r["sum(total)"]), int(r["sum(train)"])) for r in counts})
    index = {item: i for i, item in enumerate(vocab) if i >= FIRST_ITEM}
    num_items = len(vocab)
    if num_items - FIRST_ITEM <= cfg.eval.num_negatives:
        raise DataSourceError(f"data.paths: {num_items - FIRST_ITEM} items; recommend.eval.num_negatives "
                              f"({cfg.eval.num_negatives}) needs more items than that")

    users = sorted(kept.take_all(), key=lambda r: r["user"])
    held = {u["user"] for u in users if holds_out_val(u["user"], cfg.val_holdout, cfg.eval.seed)}
    if not held:
        raise DataSourceError(f"recommend.val_holdout: {cfg.val_holdout} of {n_users} users holds out no "
                              f"validation target; raise it")
    # A training pair needs 2+ items before the first held-out target.
    n_train_users = sum(1 for u in users if u["n"] - (2 if u["user"] in held else 1) >= 2)
    encoded = kept.map_batches(
        _Encode, fn_constructor_args=(index, num_items, cfg.max_len, cfg.eval.num_negatives, cfg.eval.seed,
                                      cfg.val_holdout),
        batch_size=1024, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1),
    ).materialize()
    examples = {}
    split_cols = {"train": ["input_ids", "pos", "seg", "positions"], "val": ["user", "input_ids", "target", "candidates"],
                  "test": ["user", "input_ids", "target", "candidates"]}
    for split, columns in split_cols.items():
        part = encoded.filter(lambda r, s=split: r["split"] == s).select_columns(columns).materialize()
        examples[split] = part.count()
        if split == "train":
            examples["train_users"] = n_train_users
        part.write_parquet(runtime.join(out, split))

    # Evaluation files in the `user item` layout for `lmstack evaluate --model ... --targets ...`.
    files_out = {}
    for split, cut in (("val", 2), ("test", 1)):
        hist = runtime.join(out, f"{split}_history.txt")
        tgt = runtime.join(out, f"{split}_targets.txt")
        listed = [u for u in users if split == "test" or u["user"] in held]
        _write_lines(hist, [(u["user"], i) for u in listed for i in list(u["items"])[:-cut]])
        _write_lines(tgt, [(u["user"], list(u["items"])[-cut]) for u in listed])
        files_out[split] = {"history": hist, "targets": tgt}

    if rejects:
        runtime.write_text(runtime.join(out, "rejects", "rejects.jsonl"),
                           "".join(json.dumps(_reject_record(r, files), ensure_ascii=False) + "\n" for r in rejects))
    by_reason = _by_reason(rejects)
    vocab_path = runtime.join(out, "items.json")
    runtime.write_json(vocab_path, {
        "items": vocab, "counts": train_counts,
        "columns": {"user": cfg.user_column, "item": cfg.item_column, "time": cfg.time_column},
        "eval": cfg.eval.model_dump(),
    })
    lengths = [int(u["n"]) for u in users]
    manifest = {
        "task": "recommend",
        "recipe": recipe.name,
        "prepare_hash": spec_hash,
        "inputs": files,
        "records": {"read": n_lines, "accepted": accepted, "rejected_records": n_lines - accepted,
                    "rejected_by_reason": by_reason},
        "users": {"kept": n_users, "too_few_interactions": len(short),
                  "mean_length": round(float(np.mean(lengths)), 3), "max_length": max(lengths)},
        "num_items": num_items,  # with padding (0) and unknown (1)
        "items": num_items - FIRST_ITEM,
        "max_len": cfg.max_len,
        "val_holdout": cfg.val_holdout,  # validation targets of the other users are trained on
        "examples": examples,
        "vocab": vocab_path,
        "eval": cfg.eval.model_dump(),
        "eval_files": files_out,
        "wall_time_s": round(time.time() - started, 2),
    }
    runtime.write_json(runtime.join(out, "manifest.json"), manifest)
    log(f"recommend prepare: {n_lines} records ({n_lines - accepted} rejected: {by_reason}); "
        f"{n_users} users kept ({len(short)} with too few interactions), {num_items - FIRST_ITEM} items; "
        f"rows {examples}")
    return manifest


def _by_reason(rejects: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rejects:
        out[r["reject"]] = out.get(r["reject"], 0) + 1
    return out


def _reject_record(r: dict[str, Any], files: list[str]) -> dict[str, Any]:
    rec = {"reason": r["reject"], "raw": r.get("raw", "")}
    if r.get("file", -1) >= 0:
        rec.update(file=files[int(r["file"])], line=int(r["line"]))
    if r.get("interactions"):
        rec.update(user=r["user"], interactions=r["interactions"])
    return rec
