"""Translate's report figures: BLEU/chrF of the exported model on the first validation pairs that
prepare wrote (<data>/val.tsv) and a few example translations beside their references."""

from __future__ import annotations

import os
from typing import Any

from lmstack import runtime
from lmstack.tasks.report import ReportPart, RunRecord
from lmstack.tasks.translate import data as tdata

REPORT_PAIRS = 32  # enough for a BLEU the page can show, few enough to decode in seconds on a CPU
EXAMPLES = 6


def translation_parts(run: RunRecord, predict: Any) -> list[ReportPart]:
    """`predict` is the task's own predict(model_dir, texts, direction=...) (the served path)."""
    from lmstack.tasks.translate.metrics import score

    info = run.info or {}
    tok_dir = (info.get("tokenizer") or {}).get("dir") or ""
    val_tsv = runtime.join(os.path.dirname(tok_dir.rstrip("/")), "val.tsv") if tok_dir else ""
    if not (run.model_dir and val_tsv and runtime.exists(val_tsv)):
        return []
    lines = runtime.read_text(val_tsv).splitlines()[:REPORT_PAIRS]
    pairs, _ = tdata.read_pairs(val_tsv, lines)
    if not pairs:
        return []
    table: list[list[Any]] = [["direction", "pairs", "BLEU", "chrF"]]
    examples: list[list[Any]] = [["direction", "source", "translation", "reference"]]
    for direction in info.get("directions") or [tdata.DIRECTIONS[0]]:
        src, tgt = direction.split("-")
        hyps = [r["translation"] for r in predict(run.model_dir, [p[src] for p in pairs], direction=direction)]
        s = score(hyps, [p[tgt] for p in pairs], tgt)
        table.append([direction, len(pairs), s["bleu"], s["chrf"]])
        examples += [[direction, p[src], h, p[tgt]] for p, h in zip(pairs[:EXAMPLES], hyps, strict=False)]
    note = (f"the exported model on the first {len(pairs)} pairs of {val_tsv} (sacrebleu; for the full "
            f"split: lmstack evaluate --model MODEL --data {val_tsv})")
    return [ReportPart("BLEU / chrF (validation sample)", note=note, table=table),
            ReportPart("Example translations", table=examples)]
