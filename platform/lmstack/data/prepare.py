"""`lmstack prepare`: read → clean → dedup → tokenizer → tokenize/pack → Parquet shards + manifest.

The output directory holds train/ and val/ Parquet shards (column `input_ids`), tokenizer/,
rejects/ (JSON lines: source, line, reason, raw text) and manifest.json with every count.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections import Counter
from typing import Any

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.data.clean import RULES, clean_batch
from lmstack.data.dedup import exact_duplicate_ids, near_duplicate_ids
from lmstack.data.pack import tokenize_pack
from lmstack.data.read import AccountingError, DataSourceError, read_documents
from lmstack.data.tokenizer import build_tokenizer

# Row filters here are cheap lambdas on materialized data; Ray suggests expressions instead.
warnings.filterwarnings("ignore", message="Use 'expr' instead of 'fn'")

_STAT_KEYS = [f"{s}_{k}" for s in ("train", "val") for k in ("tokens", "bytes", "leftover")]


def _sample_texts(ds, max_bytes: int):
    seen = 0
    for batch in ds.select_columns(["text"]).iter_batches(batch_size=256, batch_format="numpy"):
        for text in batch["text"]:
            yield text
            seen += len(text)
            if seen >= max_bytes:
                return


def _alphabet(ds) -> str:
    def chars(batch: dict[str, Any]) -> dict[str, Any]:
        return {"chars": ["".join(sorted(set("".join(batch["text"]))))]}

    found: set[str] = set()
    for row in ds.map_batches(chars).iter_rows():
        found.update(row["chars"])
    return "".join(sorted(found))


def prepare(recipe: Recipe, log=print, prepare_hash: str | None = None) -> dict[str, Any]:
    """Run the data stages for `recipe`; returns (and writes) the manifest. `prepare_hash` (the task's
    fingerprint of what this data depends on) is recorded so stages know when to prepare again."""
    started = time.time()
    cfg = recipe.data
    out = recipe.data_dir()
    for stale in ("train", "val", "rejects"):  # a re-run replaces, never mixes, outputs
        runtime.remove_dir(runtime.join(out, stale))
    runtime.makedirs(out)

    docs = (
        read_documents(cfg.paths, cfg.format, cfg.text_field, cfg.text_unit, cfg.max_bytes_per_file, cfg.max_files)
        .map_batches(clean_batch, fn_kwargs={"cfg": cfg.clean}, batch_format="numpy")
        .materialize()
    )
    by_file_status = _by(docs, ["source", "status"])
    status: Counter = Counter()
    for (_, st), (n, _) in by_file_status.items():
        status[st] += n
    n_read = sum(status.values())
    reject_kinds = {k.split(":", 1)[1]: n for k, n in status.items() if k.startswith("reject:")}
    dropped = {k.split(":", 1)[1]: n for k, n in status.items() if k.startswith("drop:")}
    n_rejected = sum(reject_kinds.values())
    if n_rejected:
        rejects = docs.filter(lambda r: r["status"].startswith("reject:"))
        rejects.select_columns(["source", "line", "reject", "nbytes", "raw"]).write_json(runtime.join(out, "rejects"))
    kept = docs.filter(lambda r: r["status"] == "ok").select_columns(["doc_id", "text", "source", "nbytes"])
    kept = kept.materialize()
    n_clean = status.get("ok", 0)
    log(f"read {n_read} documents: {n_rejected} set aside in rejects/ ({reject_kinds}), "
        f"{sum(dropped.values())} dropped by cleaning rules ({dropped}), {n_clean} clean")

    exact_ids: set[int] = exact_duplicate_ids(kept) if cfg.dedup.exact else set()
    if exact_ids:
        kept = kept.filter(lambda r: r["doc_id"] not in exact_ids).materialize()
    near_ids: set[int] = near_duplicate_ids(kept, cfg.dedup) if cfg.dedup.near else set()
    if near_ids:
        kept = kept.filter(lambda r: r["doc_id"] not in near_ids).materialize()
    n_kept = n_clean - len(exact_ids) - len(near_ids)
    dup_ids = exact_ids | near_ids
    files = _file_accounts(by_file_status, _by(kept, ["source"]) if n_kept else {},
                           _by(docs.filter(lambda r: r["doc_id"] in dup_ids), ["source"]) if dup_ids else {})
    log(f"dedup removed {len(exact_ids)} exact and {len(near_ids)} near duplicates; {n_kept} kept")
    if n_kept == 0:
        raise DataSourceError(f"data.paths: no document survived reading and cleaning (see {out}/manifest.json)")

    tok_dir = runtime.join(out, "tokenizer")
    alphabet = _alphabet(kept) if recipe.tokenizer.kind == "char" else None
    texts = _sample_texts(kept, recipe.tokenizer.sample_bytes) if alphabet is None else iter(())
    tokenizer = build_tokenizer(recipe.tokenizer, texts, alphabet)
    tokenizer.save_pretrained(tok_dir)
    log(f"tokenizer ({recipe.tokenizer.kind}, vocab {len(tokenizer)}) saved to {tok_dir}")

    workers = max(1, min(4, int(_cpus())))
    packed = kept.map_batches(
        tokenize_pack,
        fn_kwargs={"tokenizer_dir": tok_dir, "block_size": cfg.block_size, "val_fraction": cfg.val_fraction,
                   "split": cfg.split, "folds": cfg.folds, "fold": cfg.fold, "prepare_id": uuid.uuid4().hex},
        batch_size=512,
        batch_format="numpy",
        compute=_task_pool(workers),
    ).materialize()
    stats = {k: int(v) for k, v in zip(_STAT_KEYS, _sums(packed), strict=True)}
    for split in ("train", "val"):
        blocks = packed.filter(lambda r, s=split: r["split"] == s).select_columns(["input_ids"])
        blocks.write_parquet(runtime.join(out, split))
    blocks_by_split = {
        split: (stats[f"{split}_tokens"] - stats[f"{split}_leftover"]) // cfg.block_size for split in ("train", "val")
    }

    manifest = {
        "recipe": recipe.name,
        "task": recipe.task,
        "recipe_hash": recipe.fingerprint("data", "tokenizer"),
        "prepare_hash": prepare_hash,
        "inputs": cfg.paths,
        "documents": {
            "read": n_read,
            "rejected": n_rejected,
            "rejected_by_reason": dict(reject_kinds),
            "dropped_by_rule": {rule: dropped.get(rule, 0) for rule in RULES},
            "duplicates_exact": len(exact_ids),
            "duplicates_near": len(near_ids),
            "kept": n_kept,
        },
        # Per source file: read = kept + rejected + dropped + duplicates, in records and in bytes (as read:
        # decompressed, every column of a table, the part past max_bytes_per_file under `rejected`).
        "files": files,
        "tokenizer": {"kind": recipe.tokenizer.kind, "dir": tok_dir, "vocab_size": len(tokenizer)},
        "eos_id": tokenizer.eos_token_id,
        "block_size": cfg.block_size,
        "tokens": {"train": stats["train_tokens"], "val": stats["val_tokens"]},
        "tokens_not_in_blocks": {"train": stats["train_leftover"], "val": stats["val_leftover"]},
        "bytes": {"train": stats["train_bytes"], "val": stats["val_bytes"]},
        "bytes_per_token_val": stats["val_bytes"] / max(stats["val_tokens"], 1),
        "blocks": {"train": blocks_by_split.get("train", 0), "val": blocks_by_split.get("val", 0)},
        "split": {"method": cfg.split, "val_fraction": cfg.val_fraction},
        "wall_time_s": round(time.time() - started, 2),
    }
    runtime.write_json(runtime.join(out, "manifest.json"), manifest)
    log(
        f"{manifest['tokens']['train']:,} train / {manifest['tokens']['val']:,} val tokens in "
        f"{manifest['blocks']['train']:,} / {manifest['blocks']['val']:,} blocks of {cfg.block_size}"
    )
    return manifest


def _by(ds, keys: list[str]) -> dict[tuple, tuple[int, int]]:
    """{key values: (records, bytes)}: each block is grouped where it lies (pyarrow) and only the small
    partial tables reach the driver. A Ray Data groupby would start hash-shuffle actors for every count,
    seconds of start-up per call for a table of a few rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def partial(block: pa.Table) -> pa.Table:
        if block.num_rows == 0:  # an empty block may not even carry the columns
            return pa.table({**{k: pa.array([], pa.string()) for k in keys},
                             "nbytes_count": pa.array([], pa.int64()), "nbytes_sum": pa.array([], pa.int64())})
        return block.select([*keys, "nbytes"]).group_by(keys).aggregate(
            [("nbytes", "count", pc.CountOptions(mode="all")), ("nbytes", "sum")])

    out: dict[tuple, tuple[int, int]] = {}
    for row in ds.map_batches(partial, batch_format="pyarrow", batch_size=None).iter_rows():
        key = tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]
        n, b = out.get(key, (0, 0))
        out[key] = (n + int(row["nbytes_count"]), b + int(row["nbytes_sum"] or 0))
    return out


def _file_accounts(by_file_status: dict, kept: dict, dups: dict) -> dict[str, dict[str, dict[str, int]]]:
    """Every file's records and bytes by fate. `kept` (the rows that reach the tokenizer) and `dups` (the
    rows dedup removed) are counted on their own datasets, so a row lost or doubled between stages breaks
    the sum: that is a bug, and prepare stops rather than write a manifest that does not add up."""
    files: dict[str, dict[str, dict[str, int]]] = {}
    zero = {"records": 0, "bytes": 0}
    for (source, st), (n, b) in sorted(by_file_status.items()):
        f = files.setdefault(source, {k: dict(zero) for k in ("read", "kept", "rejected", "dropped", "duplicates")})
        part = "rejected" if st.startswith("reject:") else "dropped" if st.startswith("drop:") else None
        for key in ("read", part):
            if key:
                f[key]["records"] += n
                f[key]["bytes"] += b
    for part, counts in (("kept", kept), ("duplicates", dups)):
        for source, (n, b) in counts.items():
            files[source][part] = {"records": n, "bytes": b}
    for source, f in files.items():
        for unit in ("records", "bytes"):
            parts = sum(f[k][unit] for k in ("kept", "rejected", "dropped", "duplicates"))
            if parts != f["read"][unit]:
                raise AccountingError(f"{source}: {f['read'][unit]} {unit} read but {parts} accounted for ({f})")
    return files


def _sums(ds) -> list[float]:
    result = ds.sum(_STAT_KEYS)
    return [result[f"sum({k})"] for k in _STAT_KEYS]


def _cpus() -> float:
    import ray

    return ray.cluster_resources().get("CPU", 1)


def _task_pool(size: int):
    import ray.data

    return ray.data.TaskPoolStrategy(size=size)

