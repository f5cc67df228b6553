"""CTC decoding on constructed logits, the character LM, and WER/CER against a direct computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lmstack.tasks.speech.decode import CharNgramLM, CharVocab, beam_search, collapse, decode_batch, greedy
from lmstack.tasks.speech.metrics import edit_counts, from_counts, score

VOCAB = CharVocab("ab ")


def frames(*rows: dict[int, float]) -> np.ndarray:
    """[T, V] log-probabilities from {id: probability} per frame (the rest spread evenly)."""
    v = len(VOCAB)
    out = np.zeros((len(rows), v))
    for t, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (v - len(row))
        out[t] = [row.get(i, rest) for i in range(v)]
    return np.log(out)


def test_greedy_collapses_repeats_and_blanks():
    assert collapse([0, 1, 1, 0, 1, 2, 2, 0]) == [1, 1, 2]
    lp = frames({1: 0.9}, {1: 0.9}, {0: 0.9}, {1: 0.9}, {2: 0.8})
    assert VOCAB.decode(greedy(lp)) == "aab"
    assert VOCAB.decode(greedy(lp, length=2)) == "a"


def _text_prob(lp: np.ndarray, text: str) -> float:
    """P(text) summed over every CTC path: the brute-force definition beam search approximates."""
    target = VOCAB.encode(text)
    total = 0.0
    for path in itertools.product(range(len(VOCAB)), repeat=len(lp)):
        if collapse(path) == target:
            total += math.exp(sum(lp[t, c] for t, c in enumerate(path)))
    return total


def test_beam_finds_the_most_probable_text_where_greedy_does_not():
    # Best path is blank-blank-blank (""), but "a" collects more probability over its many paths.
    lp = frames({0: 0.4, 1: 0.35}, {0: 0.4, 1: 0.35}, {0: 0.4, 1: 0.35})
    assert VOCAB.decode(greedy(lp)) == ""
    best = beam_search(lp, VOCAB, beam_width=8)
    assert best[0][0] == "a"
    assert _text_prob(lp, "a") > _text_prob(lp, "")
    for text, logp in best[:3]:  # the scores are the exact text probabilities (nothing pruned here)
        assert math.exp(logp) == pytest.approx(_text_prob(lp, text), rel=1e-6)


def test_beam_width_one_and_batch_decoding():
    lp = frames({1: 0.9}, {0: 0.9}, {2: 0.9})
    assert decode_batch(lp[None], [3], VOCAB, "greedy") == ["ab"]
    assert decode_batch(lp[None], [3], VOCAB, "beam", beam_width=1) == ["ab"]


def test_shallow_fusion_can_flip_an_ambiguous_frame():
    lm = CharNgramLM.train(["ab", "ab", "ab"], order=2, alphabet=VOCAB.chars)
    lp = frames({1: 0.9}, {0: 0.9}, {2: 0.45, 1: 0.5})  # acoustically "aa" is slightly ahead of "ab"
    assert beam_search(lp, VOCAB, 8)[0][0] == "aa"
    assert beam_search(lp, VOCAB, 8, lm=lm.logprob, lm_weight=1.0)[0][0] == "ab"


def test_char_lm_is_a_distribution_and_round_trips():
    lm = CharNgramLM.train(["ab a", "b"], order=3, alphabet=VOCAB.chars)
    for history in ("", "a", "ab", "zz"):
        total = sum(math.exp(lm.logprob(history, c)) for c in [*VOCAB.chars, "\x03"])
        assert total == pytest.approx(1.0, abs=1e-9)
    again = CharNgramLM.from_dict(lm.to_dict())
    assert again.logprob("ab", " ") == lm.logprob("ab", " ")


def _levenshtein(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def test_wer_cer_accuracy_match_a_direct_computation():
    refs = ["one two three", "four", "five six", "seven"]
    hyps = ["one too three", "", "five six", "seven eight"]
    words = sum(len(r.split()) for r in refs)
    chars = sum(len(r) for r in refs)
    wer = sum(_levenshtein(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True)) / words
    cer = sum(_levenshtein(list(r), list(h)) for r, h in zip(refs, hyps, strict=True)) / chars
    got = score(refs, hyps)
    assert got["wer"] == pytest.approx(wer) and got["cer"] == pytest.approx(cer)
    assert got["accuracy"] == pytest.approx(sum(r == h for r, h in zip(refs, hyps, strict=True)) / len(refs))
    # Summing per-batch counts gives the corpus figures, not a mean of per-batch ratios.
    halves = edit_counts(refs[:1], hyps[:1]) + edit_counts(refs[1:], hyps[1:])
    assert from_counts(halves) == pytest.approx(got)
