"""The data a compression is measured on: token rows for an LM, (token row, class id) for a classifier.

Accepted: a prepared split (a Parquet file or directory with `input_ids`, plus `labels` for
classification, e.g. `<run>/data/val`), JSON lines, CSV, or (LM only) plain text. Records that
cannot be used (bad JSON, missing field, unknown label, empty text) are counted and returned as
rejects with file, line and reason, for the caller to write beside its report.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from lmstack.compress.load import CLASSIFIER
from lmstack.data.read import decoded_lines


@dataclass
class EvalData:
    rows: list[list[int]]  # token ids per example (LM: fixed blocks)
    labels: list[int] | None  # class ids (classification only)
    source: str
    rejects: list[dict[str, Any]] = field(default_factory=list)


def collate(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _records(path: str, text_field: str, label_field: str | None, rejects: list[dict[str, Any]]):
    """(line, text, label) from JSON lines or CSV; bad records go to `rejects`."""
    def reject(line: int, reason: str, raw: str) -> None:
        rejects.append({"source": path, "line": line, "reason": reason, "raw": raw[:500]})

    if path.endswith(".csv"):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                body = f.read()
        except UnicodeDecodeError as err:  # never U+FFFD in what the model is measured on
            reject(0, f"not UTF-8 at byte {err.start}", "")
            return
        with io.StringIO(body, newline="") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                if not row.get(text_field) or (label_field and not row.get(label_field)):
                    reject(line, f"missing {text_field!r} or {label_field!r}", json.dumps(row, ensure_ascii=False))
                    continue
                yield line, row[text_field], row.get(label_field) if label_field else None
        return
    for line, raw, reason in decoded_lines(path):
        if reason is not None:
            reject(line, reason, "")
            continue
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except RecursionError:
            reject(line, "not JSON: nested too deeply", raw)
            continue
        except ValueError as err:
            reject(line, f"not JSON: {getattr(err, 'msg', str(err))}", raw)
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str) or not rec[text_field]:
            reject(line, f"no text in field {text_field!r}", raw)
            continue
        if label_field and rec.get(label_field) is None:
            reject(line, f"no label in field {label_field!r}", raw)
            continue
        yield line, rec[text_field], (str(rec[label_field]) if label_field else None)


def _parquet(path: str, kind: str, max_rows: int) -> EvalData:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if "input_ids" not in table.column_names or (kind == CLASSIFIER and "labels" not in table.column_names):
        need = "input_ids and labels" if kind == CLASSIFIER else "input_ids"
        raise ValueError(f"{path}: a prepared split needs the column(s) {need}")
    table = table.slice(0, max_rows)
    rows = [list(map(int, r)) for r in table.column("input_ids").to_pylist()]
    if "attention_mask" in table.column_names:  # drop padding the prepare step may have stored
        masks = table.column("attention_mask").to_pylist()
        rows = [r[: int(sum(m))] for r, m in zip(rows, masks, strict=True)]
    labels = [int(x) for x in table.column("labels").to_pylist()] if kind == CLASSIFIER else None
    return EvalData(rows, labels, path)


def read_eval_data(path: str, kind: str, tokenizer, config, text_field: str = "text",
                   label_field: str = "label", max_rows: int = 2048, block_size: int = 128) -> EvalData:
    """Rows to measure a `kind` (CAUSAL_LM | CLASSIFIER) model on."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data {path!r} does not exist")
    if os.path.isdir(path) or path.endswith(".parquet"):
        return _parquet(path, kind, max_rows)
    rejects: list[dict[str, Any]] = []
    if kind == CLASSIFIER:
        label2id = {str(k): int(v) for k, v in config.label2id.items()}
        rows, labels = [], []
        for line, text, label in _records(path, text_field, label_field, rejects):
            if label not in label2id:
                rejects.append({"source": path, "line": line, "reason": f"label {label!r} not in the model's labels",
                                "raw": text[:500]})
                continue
            if len(rows) < max_rows:
                rows.append(tokenizer(text, add_special_tokens=False, truncation=True,
                                      max_length=block_size)["input_ids"])
                labels.append(label2id[label])
        if not rows:
            raise ValueError(f"{path}: no usable labelled records ({len(rejects)} rejected)")
        return EvalData(rows, labels, path, rejects)
    if path.endswith((".jsonl", ".json")):
        texts = [t for _, t, _ in _records(path, text_field, None, rejects)]
    else:
        kept = []
        for line, text, reason in decoded_lines(path):  # lines that are not UTF-8 are set aside, not replaced
            if reason is None:
                kept.append(text)
            else:
                rejects.append({"source": path, "line": line, "reason": reason, "raw": ""})
        texts = ["".join(kept)]
    ids: list[int] = []
    for t in texts:  # documents joined with EOS, as lmstack packs them for training
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
        if len(ids) >= max_rows * block_size:
            break
    rows = [ids[i:i + block_size] for i in range(0, len(ids) - block_size + 1, block_size)][:max_rows]
    if not rows:
        raise ValueError(f"{path}: fewer than {block_size} tokens of text")
    return EvalData(rows, None, path, rejects)
