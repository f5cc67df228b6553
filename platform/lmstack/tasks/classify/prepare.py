"""`lmstack prepare` for task classify: records -> splits -> token ids -> Parquet + manifest.

Splits go by a stable hash of the record id (test first, then val or one of k folds), so a record
keeps its split when other records come and go. With data.folds = k every non-test example is
written once to `cv/` with its fold number and each fold's run filters it (one prepare, k runs).
Tokenization happens on the driver: a few thousand short texts take well under a second with the
fast tokenizer, below Ray Data's per-task overhead (RAY_NOTES.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.data.tokenizer import build_tokenizer, load_tokenizer
from lmstack.tasks.classify.records import assign_split, read_records, subsample

SPLITS = ("train", "val", "test", "cv")


def model_context(model_dir: str) -> int | None:
    """The pretrained model's context length, which caps classify.max_length."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def prepare_hash(recipe: Recipe) -> str:
    """What the prepared data depends on: data (folds, not the fold), tokenizer, classify, from_model."""
    import hashlib

    raw = recipe.model_dump(mode="json")
    raw["data"].pop("fold", None)
    raw["data"].pop("output", None)  # where the data is written is not what it holds
    key = {k: raw[k] for k in ("data", "tokenizer", "classify")} | {"from_model": raw["finetune"]["from_model"]}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def class_weights(counts: list[int], mode: str) -> list[float]:
    """balanced: n / (C * n_c), scikit-learn's `class_weight="balanced"` (absent classes get 0)."""
    if mode == "none":
        return [1.0] * len(counts)
    n, c = sum(counts), len(counts)
    return [n / (c * k) if k else 0.0 for k in counts]


def encode(tok, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids and mask [N, max_length]; the head reads the last non-pad position."""
    pad = tok.pad_token_id
    enc = tok(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    ids = np.full((len(texts), max_length), pad, dtype=np.int32)
    mask = np.zeros((len(texts), max_length), dtype=np.int8)
    for i, row in enumerate(enc):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


def _write_split(path: str, rows: list[dict[str, Any]], ids: np.ndarray, mask: np.ndarray,
                 label_cols: dict[str, list[int]]) -> None:
    length = ids.shape[1]
    table = pa.table({
        "id": [r["id"] for r in rows],
        "text": [r["text"] for r in rows],
        "fold": pa.array([r["fold"] for r in rows], pa.int32()),
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel(), pa.int32()), length),
        "attention_mask": pa.FixedSizeListArray.from_arrays(pa.array(mask.ravel(), pa.int8()), length),
        **{name: pa.array(values, pa.int64()) for name, values in label_cols.items()},
    })
    runtime.makedirs(path)
    fs, p = runtime.filesystem(path)
    pq.write_table(table, f"{p}/part-00000.parquet", filesystem=fs)


def prepare_classify(recipe: Recipe, log=print) -> dict[str, Any]:
    cfg, data, ft = recipe.classify, recipe.data, recipe.finetune
    assert cfg is not None  # the recipe validator requires the section for task classify
    out_dir = recipe.data_dir()
    recs = read_records(data.paths, cfg, data.format, data.max_files)
    examples = subsample(recs.examples, cfg.max_per_class)
    # Pretraining text: the split is a hash of the record id, so it is decided for every record, kept or not.
    lm_texts = [ex["text"] for ex in recs.examples
                if assign_split(ex["id"], cfg.test_fraction, data.val_fraction, data.folds)[0] == "train"
                ] if cfg.lm_text else []
    if not examples:
        raise ValueError(f"{data.paths}: no usable labelled records ({len(recs.rejects)} rejected)")
    for ex in examples:
        ex["split"], ex["fold"] = assign_split(ex["id"], cfg.test_fraction, data.val_fraction, data.folds)

    # Labels in sorted order: ids do not depend on which records came first.
    labels = sorted({ex["label"] for ex in examples})
    extra = {f: sorted({ex[f"label_{f}"] for ex in examples if ex[f"label_{f}"] is not None})
             for f in cfg.extra_label_fields}
    train_like = [ex for ex in examples if ex["split"] in ("train", "cv")]

    max_length = cfg.max_length
    if ft.from_model:
        tok = load_tokenizer(ft.from_model)
        context = model_context(ft.from_model)
        if context:
            max_length = min(max_length, context)
    else:
        # Trained on the training texts only: validation and test characters stay unseen.
        texts = lm_texts or [ex["text"] for ex in train_like]  # lm_texts holds every train-split text
        tok = build_tokenizer(recipe.tokenizer, texts, alphabet="".join(texts) if recipe.tokenizer.kind == "char"
                              else None)
        path = recipe.tokenizer.path
        if recipe.tokenizer.kind == "pretrained" and path and os.path.exists(os.path.join(path, "config.json")):
            # A model directory's tokenizer: keep within that model's context as well.
            max_length = min(max_length, model_context(path) or max_length)
    tok_dir = runtime.join(out_dir if runtime.is_uri(out_dir) else os.path.abspath(out_dir), "tokenizer")
    _save_tokenizer(tok, tok_dir)

    counts: dict[str, dict[str, int]] = {}
    examples_per_split: dict[str, int] = {}
    for split in SPLITS:
        rows = [ex for ex in examples if ex["split"] == split]
        runtime.remove_dir(runtime.join(out_dir, split))
        if not rows:
            continue
        ids, mask = encode(tok, [r["text"] for r in rows], max_length)
        label_cols = {"labels": [labels.index(r["label"]) for r in rows]}
        for f, values in extra.items():
            # A record without this label trains the other heads only (-100 is ignored by the loss).
            label_cols[f"labels_{f}"] = [values.index(r[f"label_{f}"]) if r[f"label_{f}"] is not None else -100
                                         for r in rows]
        _write_split(runtime.join(out_dir, split), rows, ids, mask, label_cols)
        counts[split] = dict(sorted(Counter(r["label"] for r in rows).items()))
        examples_per_split[split] = len(rows)
    runtime.remove_dir(runtime.join(out_dir, "lm_text"))
    if lm_texts:
        runtime.makedirs(runtime.join(out_dir, "lm_text"))
        fs, p = runtime.filesystem(runtime.join(out_dir, "lm_text"))
        pq.write_table(pa.table({"text": lm_texts}), f"{p}/part-00000.parquet", filesystem=fs)
    if data.folds:
        counts["folds"] = {str(k): sum(1 for ex in examples if ex["fold"] == k) for k in range(data.folds)}

    train_counts = Counter(ex["label"] for ex in train_like)
    rejects_path = runtime.join(out_dir, "rejects", "rejects.jsonl")
    runtime.write_text(rejects_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs.rejects))
    by_reason = Counter(r["reason"].split(":")[0] for r in recs.rejects)
    manifest = {
        "task": "classify",
        "records": len(recs.examples) + len(recs.rejects),
        "rejected": len(recs.rejects),
        "rejected_by_reason": dict(by_reason),
        "rejects": rejects_path,
        "subsampled_out": len(recs.examples) - len(examples),
        "lm_text": {"records": len(lm_texts), "chars": sum(map(len, lm_texts))} if cfg.lm_text else None,
        "examples": examples_per_split,
        "labels": labels,
        "label_field": cfg.label_field,
        "extra_labels": extra,
        "class_counts": counts,
        "class_weights": class_weights([train_counts.get(label, 0) for label in labels], cfg.class_weights),
        "max_length": max_length,
        "pad_id": tok.pad_token_id,
        "eos_id": tok.eos_token_id,
        "folds": data.folds,
        "tokenizer": {"dir": tok_dir, "vocab_size": len(tok), "from_model": ft.from_model},
        "recipe_hash": recipe.fingerprint("data", "tokenizer"),
        "prepare_hash": prepare_hash(recipe),
    }
    runtime.write_json(runtime.join(out_dir, "manifest.json"), manifest)
    log(f"prepared {recipe.name}: {examples_per_split} examples of {len(labels)} labels, "
        f"{len(recs.rejects)} rejected (see {rejects_path}); max_length {max_length}")
    return manifest


def _save_tokenizer(tok, dest: str) -> None:
    if not runtime.is_uri(dest):
        tok.save_pretrained(dest)
        return
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        fs, p = runtime.filesystem(dest)
        pafs.copy_files(tmp, p, destination_filesystem=fs)
