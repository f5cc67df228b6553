"""Normalise text and apply quality rules; each rule is configurable and every drop is counted.

`clean_text` normalises; `drop_reason` returns the first rule a document fails (or None).
Both are plain functions so they can be tested and reused outside Ray.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

from lmstack.config import CleanConfig

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->|<[^>]+>", re.S | re.I)
_TRAILING_WS = re.compile(r"[ \t]+\n")
_MANY_BLANKS = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+", re.U)

RULES = ("too_short", "too_long", "symbol_ratio", "repeated_lines", "mean_word_length")


def clean_text(text: str, cfg: CleanConfig) -> str:
    if cfg.nfkc:
        text = unicodedata.normalize("NFKC", text)
    if cfg.strip_html:
        text = html.unescape(_TAG.sub(" ", text))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if cfg.normalize_whitespace:
        # Indentation is kept (code and verse need it); trailing blanks and blank runs go.
        text = _MANY_BLANKS.sub("\n\n", _TRAILING_WS.sub("\n", text)).strip("\n ")
    return text


def symbol_word_ratio(text: str) -> float:
    words = len(text.split())
    symbols = text.count("#") + text.count("...") + text.count("\u2026")
    return symbols / max(words, 1)


def repeated_line_fraction(text: str) -> float:
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if not lines:
        return 0.0
    seen: set[str] = set()
    repeated = 0
    for ln in lines:
        if ln in seen:
            repeated += 1
        seen.add(ln)
    return repeated / len(lines)


def mean_word_length(text: str) -> float:
    words = _WORD.findall(text)
    return sum(map(len, words)) / len(words) if words else 0.0


def drop_reason(text: str, cfg: CleanConfig) -> str | None:
    if len(text) < max(cfg.min_chars, 1):
        return "too_short"
    if cfg.max_chars is not None and len(text) > cfg.max_chars:
        return "too_long"
    if cfg.max_symbol_word_ratio is not None and symbol_word_ratio(text) > cfg.max_symbol_word_ratio:
        return "symbol_ratio"
    if (
        cfg.max_repeated_line_fraction is not None
        and repeated_line_fraction(text) > cfg.max_repeated_line_fraction
    ):
        return "repeated_lines"
    if cfg.min_mean_word_length is not None or cfg.max_mean_word_length is not None:
        mwl = mean_word_length(text)
        if (cfg.min_mean_word_length is not None and mwl < cfg.min_mean_word_length) or (
            cfg.max_mean_word_length is not None and mwl > cfg.max_mean_word_length
        ):
            return "mean_word_length"
    return None


def reject_kind(reason: str) -> str:
    """The short class of a reject reason ("malformed JSON: ..." -> "malformed JSON")."""
    return reason.split(" (")[0].split(":")[0].split(" at ")[0]


def clean_batch(batch: dict[str, Any], cfg: CleanConfig) -> dict[str, Any]:
    """map_batches body after reading: cleans `text` and sets `status` for every row to
    "ok", "drop:<rule>" or "reject:<kind>", so one pass yields every count."""
    texts, status = [], []
    for text, reject in zip(batch["text"], batch["reject"], strict=True):
        if isinstance(reject, str):  # an all-null column arrives as NaN floats, hence not `is None`
            texts.append(None)
            status.append(f"reject:{reject_kind(reject)}")
            continue
        text = clean_text(text, cfg)
        texts.append(text)
        rule = drop_reason(text, cfg)
        status.append(f"drop:{rule}" if rule else "ok")
    batch["text"] = texts
    batch["status"] = status
    return batch
