"""Exact (content hash) and near-duplicate (MinHash + LSH) removal, computed with Ray Data.

Both run as shuffles keyed by hash or LSH band, so no stage holds the corpus: the driver only
ever sees the ids of documents found to be duplicates.
Near-duplicates: a document is dropped when it shares an LSH bucket with a document of smaller
id whose estimated Jaccard similarity (fraction of equal MinHash values) reaches the threshold.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
import pyarrow as pa

from lmstack.config import DedupConfig

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)
_WORD = re.compile(r"\w+", re.U)


def content_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def shingles(text: str, k: int) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) <= k:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)}


def _permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    b = rng.integers(0, int(_MERSENNE), size=num_perm, dtype=np.uint64)
    return a, b


def minhash(text: str, num_perm: int, k: int) -> np.ndarray:
    """MinHash signature (uint32 x num_perm) of the word k-shingles of `text`."""
    a, b = _permutations(num_perm)
    hv = np.array(
        [int.from_bytes(hashlib.blake2b(s, digest_size=4).digest(), "little") for s in shingles(text, k)],
        dtype=np.uint64,
    )
    # Universal hashing (a*x + b) mod p, vectorised over shingles x permutations.
    phv = ((hv[:, None] * a[None, :] + b[None, :]) % _MERSENNE) & _MAX_HASH
    return phv.min(axis=0).astype(np.uint32)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    return float(np.mean(sig_a == sig_b))


def exact_duplicate_ids(ds) -> set[int]:
    """Ids of documents whose text equals that of a document with a smaller id."""

    def hashes(batch: dict[str, Any]) -> dict[str, Any]:
        return pa.table({"h": pa.array([content_hash(t) for t in batch["text"]], pa.string()),
                         "doc_id": pa.array(np.asarray(batch["doc_id"], dtype=np.int64), pa.int64())})

    def later_copies(group: dict[str, Any]) -> dict[str, Any]:
        ids = np.sort(np.asarray(group["doc_id"], dtype=np.int64))
        return {"doc_id": ids[1:]}

    dups = ds.select_columns(["doc_id", "text"]).map_batches(hashes, batch_format="numpy").groupby("h").map_groups(later_copies, batch_format="numpy")
    return {int(i) for batch in dups.iter_batches(batch_size=65536) for i in batch["doc_id"]}


def band_rows(batch: dict[str, Any], cfg: DedupConfig) -> pa.Table:
    """One row per (document, LSH band). Typed explicitly: an empty batch (a file whose records were all
    rejected) must give the same schema as a full one, or the band shuffle refuses to concatenate them."""
    rows = cfg.num_perm // cfg.bands
    keys, ids, sigs = [], [], []
    for text, did in zip(batch["text"], batch["doc_id"], strict=True):
        sig = minhash(text, cfg.num_perm, cfg.shingle)
        for band in range(cfg.bands):
            chunk = sig[band * rows : (band + 1) * rows]
            keys.append(f"{band}:{hashlib.blake2b(chunk.tobytes(), digest_size=8).hexdigest()}")
            ids.append(did)
            sigs.append(sig)
    flat = pa.array(np.asarray(sigs, dtype=np.uint32).reshape(-1), pa.uint32())
    return pa.table({
        "band": pa.array(keys, pa.string()),
        "doc_id": pa.array(np.asarray(ids, dtype=np.int64), pa.int64()),
        "sig": pa.FixedSizeListArray.from_arrays(flat, cfg.num_perm),
    })


def bucket_dups(group: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Ids in one LSH bucket that are near-duplicates of the bucket's smallest id."""
    ids = np.asarray(group["doc_id"], dtype=np.int64)
    if len(ids) == 0:
        return {"doc_id": np.zeros(0, dtype=np.int64)}
    order = np.argsort(ids)
    ids, sigs = ids[order], np.stack(list(group["sig"]))[order]
    dup = [
        int(ids[i])
        for i in range(1, len(ids))
        if ids[i] != ids[0] and estimated_jaccard(sigs[0], sigs[i]) >= threshold
    ]
    return {"doc_id": np.asarray(dup, dtype=np.int64)}


def near_duplicate_ids(ds, cfg: DedupConfig) -> set[int]:
    """Ids of documents that are near-duplicates (>= cfg.threshold) of a smaller-id document."""
    bands = ds.select_columns(["doc_id", "text"]).map_batches(band_rows, fn_kwargs={"cfg": cfg},
                                                              batch_format="numpy")
    dups = bands.groupby("band").map_groups(bucket_dups, fn_kwargs={"threshold": cfg.threshold},
                                            batch_format="numpy")
    return {int(i) for batch in dups.iter_batches(batch_size=65536) for i in batch["doc_id"]}
