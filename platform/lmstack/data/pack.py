"""Tokenize documents, split train/validation deterministically, pack into fixed-length blocks.

Documents are joined with EOS between them and cut into `block_size` blocks within each batch
(the tail of a batch that does not fill a block is counted, not carried over, so batches stay
independent and run in parallel).
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np

from lmstack.data.tokenizer import load_tokenizer


def in_validation(doc_id: int, val_fraction: float, folds: int | None = None, fold: int = 0) -> bool:
    """Hash split: stable for a document whatever else is in the corpus.

    With `folds`, the same hash deals documents into k folds and fold `fold` is validation, so the
    k validation sets are disjoint and together cover every document.
    """
    digest = hashlib.blake2b(str(int(doc_id)).encode(), digest_size=4).digest()
    h = int.from_bytes(digest, "big")
    if folds is not None:
        return h % folds == fold
    return h / 2**32 < val_fraction


def pack_ids(docs: list[list[int]], eos_id: int, block_size: int) -> tuple[np.ndarray, int]:
    """(blocks [n, block_size], tokens left over) from documents joined by EOS."""
    if not docs:
        return np.zeros((0, block_size), dtype=np.int32), 0
    stream = np.fromiter(
        (t for doc in docs for t in (*doc, eos_id)), dtype=np.int32, count=sum(len(d) + 1 for d in docs)
    )
    n = len(stream) // block_size
    return stream[: n * block_size].reshape(n, block_size), len(stream) - n * block_size


class TokenizePack:
    """map_batches body (an actor, so the tokenizer loads once per worker)."""

    def __init__(self, tokenizer_dir: str, block_size: int, val_fraction: float, split: str,
                 folds: int | None = None, fold: int = 0):
        self.tok = load_tokenizer(tokenizer_dir)
        self.eos = self.tok.eos_token_id
        self.block_size = block_size
        self.val_fraction = val_fraction
        self.split = split
        self.folds, self.fold = folds, fold

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        texts = [str(t) for t in batch["text"]]
        enc = self.tok(texts, add_special_tokens=False, return_offsets_mapping=self.split == "tail")
        parts: dict[str, list[list[int]]] = {"train": [], "val": []}
        nbytes = {"train": 0, "val": 0}
        for i, ids in enumerate(enc["input_ids"]):
            text = texts[i]
            if self.split == "tail":
                cut = int(round(len(ids) * (1 - self.val_fraction)))
                char_cut = enc["offset_mapping"][i][cut][0] if cut < len(ids) else len(text)
                parts["train"].append(ids[:cut])
                parts["val"].append(ids[cut:])
                nbytes["train"] += len(text[:char_cut].encode("utf-8"))
                nbytes["val"] += len(text[char_cut:].encode("utf-8"))
            else:
                split = "val" if in_validation(batch["doc_id"][i], self.val_fraction, self.folds, self.fold) else "train"
                parts[split].append(ids)
                nbytes[split] += len(text.encode("utf-8"))
        out: dict[str, list[Any]] = {"split": [], "input_ids": []}
        stats: dict[str, int] = {}
        for split, docs in parts.items():
            docs = [d for d in docs if d]
            blocks, left = pack_ids(docs, self.eos, self.block_size)
            out["split"].extend([split] * len(blocks))
            out["input_ids"].extend(list(blocks))
            stats[f"{split}_tokens"] = sum(len(d) + 1 for d in docs)
            stats[f"{split}_bytes"] = nbytes[split]
            stats[f"{split}_leftover"] = left
        # Per-batch statistics ride on the first row of the batch so one pass yields both.
        n = len(out["split"])
        for key, value in stats.items():
            out[key] = [value] + [0] * (n - 1) if n else []
        if n == 0:  # keep the statistics even when a batch makes no block
            out = {"split": ["none"], "input_ids": [np.zeros(self.block_size, dtype=np.int32)]}
            out.update({k: [v] for k, v in stats.items()})
        return out


@functools.lru_cache(maxsize=4)
def _packer(tokenizer_dir: str, block_size: int, val_fraction: float, split: str, folds: int | None, fold: int,
            prepare_id: str) -> TokenizePack:
    return TokenizePack(tokenizer_dir, block_size, val_fraction, split, folds, fold)


def tokenize_pack(batch: dict[str, Any], tokenizer_dir: str, block_size: int, val_fraction: float, split: str,
                  folds: int | None = None, fold: int = 0, prepare_id: str = "") -> dict[str, Any]:
    """TokenizePack as a Ray Data task body. The tokenizer loads once per worker process (Ray reuses them
    across tasks) and once per prepare (`prepare_id`: a re-prepare writes a new tokenizer to the same
    path). Tasks, not an actor pool: Ray puts an actor pool's constructor arguments in the object store
    and warned on every prepare that restarting its actors depends on them."""
    return _packer(tokenizer_dir, block_size, val_fraction, split, folds, fold, prepare_id)(batch)
