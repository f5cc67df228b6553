"""CTC decoding: the character vocabulary, greedy (best path) and prefix beam search with an optional
shallow-fusion hook, and a small character n-gram LM to fuse.

Blank is id 0; character i of the vocabulary is id i + 1.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

NEG_INF = float("-inf")
BOS, EOS = "\x02", "\x03"  # sentence boundaries of the n-gram LM (never in a vocabulary)
# (history text, next character or EOS) -> log probability; the beam adds lm_weight times it.
LMScore = Callable[[str, str], float]


class CharVocab:
    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i + 1 for i, c in enumerate(chars)}

    def __len__(self) -> int:  # with the blank
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))


def collapse(path: Sequence[int]) -> list[int]:
    """A CTC path to its labels: merge repeats, then drop blanks."""
    out, prev = [], -1
    for i in path:
        i = int(i)
        if i != prev and i != 0:
            out.append(i)
        prev = i
    return out


def greedy(log_probs: np.ndarray, length: int | None = None) -> list[int]:
    """Best path of one utterance's [T, V] scores."""
    lp = log_probs[: length if length is not None else len(log_probs)]
    return collapse(lp.argmax(-1).tolist())


def _logadd(*xs: float) -> float:
    m = max(xs)
    if m == NEG_INF:
        return NEG_INF
    return m + math.log(sum(math.exp(x - m) for x in xs))


def beam_search(log_probs: np.ndarray, vocab: CharVocab, beam_width: int = 8, length: int | None = None,
                lm: LMScore | None = None, lm_weight: float = 0.0, word_bonus: float = 0.0,
                prune: float = 12.0) -> list[tuple[str, float]]:
    """CTC prefix beam search (Hannun et al. 2014) over one utterance's [T, V] log-probabilities.

    Each prefix keeps two scores, ending in blank and not, so paths that collapse to the same text add
    up. With `lm`, extending a prefix by a character adds lm_weight * lm(prefix, char) (shallow fusion),
    and the end of the utterance adds lm_weight * lm(text, EOS); word_bonus per word offsets the LM's
    preference for short outputs. Per frame, only the beam_width best characters within `prune` nats of
    the frame's best extend prefixes.
    Returns (text, score) best first."""
    lp = np.asarray(log_probs[: length if length is not None else len(log_probs)], dtype=np.float64)
    fuse = lm is not None and lm_weight > 0
    lm_cache: dict[tuple[tuple[int, ...], int], float] = {}

    def lm_term(prefix: tuple[int, ...], c: int) -> float:
        if not fuse:
            return 0.0
        key = (prefix, c)
        if key not in lm_cache:
            lm_cache[key] = lm_weight * lm(vocab.decode(prefix), vocab.chars[c - 1])  # type: ignore[misc]
        return lm_cache[key]

    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # prefix -> (blank, non-blank)
    for frame in lp:
        # At most beam_width characters per frame, none `prune` nats below the frame's best.
        top = np.argsort(-frame)[: beam_width + 1]
        cands = [c for c in top.tolist() if c != 0 and frame[c] >= frame.max() - prune][:beam_width]
        nxt: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
        for prefix, (pb, pnb) in beams.items():
            entry = nxt[prefix]
            entry[0] = _logadd(entry[0], pb + frame[0], pnb + frame[0])
            for c in cands:
                p = frame[c]
                new = (*prefix, c)
                if prefix and prefix[-1] == c:
                    # A repeat extends only across a blank; without one it merges into the same prefix.
                    nxt[new][1] = _logadd(nxt[new][1], pb + p + lm_term(prefix, c))
                    entry[1] = _logadd(entry[1], pnb + p)
                else:
                    nxt[new][1] = _logadd(nxt[new][1], _logadd(pb, pnb) + p + lm_term(prefix, c))
        ranked = sorted(nxt.items(), key=lambda kv: _rank(kv[0], kv[1], vocab, word_bonus), reverse=True)
        beams = {k: (v[0], v[1]) for k, v in ranked[:beam_width]}

    finals = []
    for prefix, (pb, pnb) in beams.items():
        score = _rank(prefix, (pb, pnb), vocab, word_bonus)
        if fuse:
            score += lm_weight * lm(vocab.decode(prefix), EOS)  # type: ignore[misc]
        finals.append((vocab.decode(prefix), score))
    finals.sort(key=lambda x: x[1], reverse=True)
    return finals


def _rank(prefix: tuple[int, ...], scores: Sequence[float], vocab: CharVocab, word_bonus: float) -> float:
    total = _logadd(scores[0], scores[1])
    if word_bonus:
        total += word_bonus * len(vocab.decode(prefix).split())
    return total


def decode_batch(log_probs: np.ndarray, lengths: Sequence[int], vocab: CharVocab, method: str = "greedy",
                 beam_width: int = 8, lm: LMScore | None = None, lm_weight: float = 0.0,
                 word_bonus: float = 0.0) -> list[str]:
    """Texts of a batch of [B, T, V] log-probabilities with valid lengths [B]."""
    out = []
    for row, n in zip(log_probs, lengths, strict=True):
        if method == "greedy":
            out.append(vocab.decode(greedy(row, int(n))))
        else:
            out.append(beam_search(row, vocab, beam_width, int(n), lm, lm_weight, word_bonus)[0][0])
    return out


class CharNgramLM:
    """An interpolated Witten-Bell character n-gram (Witten & Bell 1991): small, exact, JSON-storable.
    Trained on the training transcripts it is the shallow-fusion LM an export carries."""

    def __init__(self, order: int, alphabet: str, counts: dict[str, dict[str, int]] | None = None):
        self.order = order
        self.alphabet = alphabet
        self.counts: dict[str, dict[str, int]] = counts or {}
        self._cache: dict[tuple[str, str], float] = {}

    @classmethod
    def train(cls, texts: Sequence[str], order: int, alphabet: str) -> CharNgramLM:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for text in texts:
            seq = BOS * (order - 1) + text + EOS
            for i in range(order - 1, len(seq)):
                for k in range(order):  # every history length 0 .. order-1
                    counts[seq[i - k:i]][seq[i]] += 1
        return cls(order, alphabet, {h: dict(c) for h, c in counts.items()})

    def logprob(self, history: str, char: str) -> float:
        h = (BOS * (self.order - 1) + history)[-(self.order - 1):] if self.order > 1 else ""
        key = (h, char)
        if key not in self._cache:
            self._cache[key] = math.log(self._prob(h, char))
        return self._cache[key]

    def _prob(self, h: str, char: str) -> float:
        # The next shorter history's estimate; below the unigram, uniform over the alphabet and EOS.
        lower = self._prob(h[1:], char) if h else 1.0 / (len(self.alphabet) + 1)
        seen = self.counts.get(h)
        if not seen:
            return lower
        total, types = sum(seen.values()), len(seen)
        return (seen.get(char, 0) + types * lower) / (total + types)

    def to_dict(self) -> dict[str, Any]:
        return {"order": self.order, "alphabet": self.alphabet, "counts": self.counts}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharNgramLM:
        return cls(int(d["order"]), d["alphabet"], d["counts"])
