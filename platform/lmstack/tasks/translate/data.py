"""cmn.txt pairs: a tolerant TSV reader, a leak-free deterministic split and the encoded rows.

The file is `English<TAB>Chinese<TAB>attribution` (manythings.org/Tatoeba). Two lines of the shipped
file use spaces instead of the first tab; those are recovered by cutting before the first CJK
character. Anything else that does not parse is returned as a reject with its file, line and reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from lmstack.data.read import decoded_lines

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z0-9]")
DIRECTIONS = ("zh-en", "en-zh")
# Source sentences start with the target language's tag, so one model can serve both directions.
TAGS = {"zh-en": "<2en>", "en-zh": "<2zh>"}


def parse_line(line: str) -> tuple[str, str] | str:
    """(english, chinese) or the reason the line is malformed."""
    text = line.rstrip("\r\n")
    if not text.strip():
        return "empty line"
    parts = text.split("\t")
    if len(parts) > 3:
        return f"expected at most 3 tab-separated fields, got {len(parts)}"
    first = parts[0]
    cjk = CJK.search(first)
    if cjk:  # a space where the first tab should be: "We try. 我们来试试。"
        en, zh = first[: cjk.start()], first[cjk.start():]
        if not en.strip() or en == en.rstrip():
            return "Chinese text inside the English field without a separating tab or space"
        if len(parts) == 3:
            return "Chinese text in the English field and 3 fields besides"
    elif len(parts) >= 2:
        en, zh = parts[0], parts[1]
    else:
        return "no tab-separated Chinese field"
    en, zh = en.strip(), zh.strip()
    if not en or not LATIN.search(en):
        return "English field has no letters or digits"
    if not zh or not CJK.search(zh):
        return "Chinese field has no Chinese characters"
    return en, zh


def read_pairs(path: str, lines: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pairs (en, zh, source, line) and rejects (source, line, reason, raw) of one cmn.txt-style file."""
    pairs: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    numbered = enumerate(lines, start=1) if lines is not None else _file_lines(path, rejects)
    for n, raw in numbered:
        parsed = parse_line(raw)
        if isinstance(parsed, str):
            rejects.append({"source": path, "line": n, "reason": parsed, "raw": raw})
        else:
            pairs.append({"en": parsed[0], "zh": parsed[1], "source": path, "line": n})
    return pairs, rejects


def _file_lines(path: str, rejects: list[dict[str, Any]]) -> Iterable[tuple[int, str]]:
    """Lines of a local/URI/.gz file; bytes that are not UTF-8 (and damage) become rejects, never U+FFFD
    inside a training pair."""
    for n, text, reason in decoded_lines(path):
        if reason is None:
            yield n, text
        else:
            rejects.append({"source": path, "line": n, "reason": reason, "raw": ""})


def dedup(pairs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """First occurrence of each exact (en, zh) pair; returns (kept, number removed)."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for p in pairs:
        key = (p["en"], p["zh"])
        if key not in seen:
            seen.add(key)
            kept.append(p)
    return kept, len(pairs) - len(kept)


def _groups(pairs: list[dict[str, Any]]) -> list[list[int]]:
    # Pairs that share an English or a Chinese sentence form one group (union-find), so a test
    # source sentence never appears on either side of a training pair.
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        a, b = find("en:" + p["en"]), find("zh:" + p["zh"])
        if a != b:
            parent[a] = b
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault(find("en:" + p["en"]), []).append(i)
    return list(groups.values())


def split_pairs(pairs: list[dict[str, Any]], test_size: int, val_size: int, seed: int,
                max_train: int | None = None) -> dict[str, list[dict]]:
    """Deterministic test/val/train by a seeded hash of each group; test and val hold whole groups.
    With max_train, train takes whole groups in hash order up to that many pairs and the rest go to
    "unused" (test and val are the same either way)."""

    def key(group: list[int]) -> str:
        first = pairs[group[0]]
        return hashlib.sha256(f"{seed}\x00{first['en']}\x00{first['zh']}".encode()).hexdigest()

    groups = sorted(_groups(pairs), key=key)
    out: dict[str, list[dict]] = {"test": [], "val": [], "train": [], "unused": []}
    wanted = {"test": test_size, "val": val_size, "train": max_train if max_train is not None else len(pairs)}
    for group in groups:
        # Fill test, then val, then train exactly: a group that would overshoot goes on to the next split.
        for split in ("test", "val", "train"):
            if len(out[split]) + len(group) <= wanted[split]:
                out[split].extend(pairs[i] for i in group)
                break
        else:
            out["unused"].extend(pairs[i] for i in group)
    for split in out:
        out[split].sort(key=lambda p: (p["source"], p["line"]))
    return out


def direction_rows(pairs: list[dict[str, Any]], directions: Iterable[str]) -> list[dict[str, str]]:
    """One (src, tgt, direction) row per pair and direction."""
    rows = []
    for d in directions:
        src, tgt = d.split("-")
        rows.extend({"src": p[src], "tgt": p[tgt], "direction": d} for p in pairs)
    return rows


def encode_source(tokenizer, texts: list[str], direction: str, max_length: int) -> tuple[list[list[int]], list[bool]]:
    """[tag] + tokens + [eos], cut to max_length; returns the ids and which ones were cut."""
    tag = tokenizer.convert_tokens_to_ids(TAGS[direction])
    body = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cut = [len(b) > max_length - 2 for b in body]
    return [[tag, *b[: max_length - 2], tokenizer.eos_token_id] for b in body], cut


def encode_target(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """tokens + [eos], cut to max_length; returns the ids and which ones were cut."""
    body = tokenizer(texts, add_special_tokens=False)["input_ids"]
    cut = [len(b) > max_length - 1 for b in body]
    return [[*b[: max_length - 1], tokenizer.eos_token_id] for b in body], cut


def pad(seqs: list[list[int]], length: int, value: int) -> np.ndarray:
    out = np.full((len(seqs), length), value, dtype=np.int32)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


class EncodePairs:
    """Ray Data map_batches callable: src/tgt/direction text -> padded input_ids, attention_mask, labels."""

    def __init__(self, tokenizer_dir: str, max_length: int):
        from lmstack.data.tokenizer import load_tokenizer

        self.tok = load_tokenizer(tokenizer_dir)
        self.max_length = max_length

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["src"])
        src_ids: list[list[int]] = [[] for _ in range(n)]
        cut_src = np.zeros(n, dtype=np.int8)
        for d in DIRECTIONS:
            idx = [i for i in range(n) if batch["direction"][i] == d]
            if not idx:
                continue
            ids, cut = encode_source(self.tok, [str(batch["src"][i]) for i in idx], d, self.max_length)
            for i, s, c in zip(idx, ids, cut, strict=True):
                src_ids[i] = s
                cut_src[i] = c
        tgt_ids, cut_tgt = encode_target(self.tok, [str(t) for t in batch["tgt"]], self.max_length)
        input_ids = pad(src_ids, self.max_length, self.tok.pad_token_id)
        return {
            "input_ids": input_ids,
            "attention_mask": (pad([[1] * len(s) for s in src_ids], self.max_length, 0)),
            "labels": pad(tgt_ids, self.max_length, -100),  # -100: ignored by the loss
            "cut": cut_src | np.array(cut_tgt, dtype=np.int8),
        }


def write_tsv(path: str, pairs: list[dict[str, Any]]) -> None:
    """A split in cmn.txt's own format, so `lmstack evaluate --data` reads it back."""
    from lmstack import runtime

    runtime.write_text(path, "".join(f"{p['en']}\t{p['zh']}\t{p['source']}:{p['line']}\n" for p in pairs))
