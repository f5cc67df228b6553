"""WER, CER and utterance accuracy as sums of counts (jiwer's alignments), so that validation can add
them up over batches and workers and divide once: the corpus-level figures, not a mean of ratios."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The order of eval_counts' vector.
COUNT_NAMES = ("word_edits", "words", "char_edits", "chars", "correct", "utterances")


def edit_counts(refs: Sequence[str], hyps: Sequence[str]) -> np.ndarray:
    """[word edits, reference words, char edits, reference chars, exact matches, utterances]."""
    import jiwer

    if not refs:
        return np.zeros(len(COUNT_NAMES))
    w = jiwer.process_words(list(refs), list(hyps))
    c = jiwer.process_characters(list(refs), list(hyps))
    word_edits = w.substitutions + w.deletions + w.insertions
    char_edits = c.substitutions + c.deletions + c.insertions
    correct = sum(1 for r, h in zip(refs, hyps, strict=True) if r.split() == h.split())
    return np.array([word_edits, w.hits + w.substitutions + w.deletions, char_edits,
                     c.hits + c.substitutions + c.deletions, correct, len(refs)], dtype=np.float64)


def from_counts(counts: np.ndarray, prefix: str = "") -> dict[str, float]:
    """wer, cer, accuracy (and the number of utterances) from summed edit_counts."""
    we, words, ce, chars, correct, n = (float(x) for x in counts[: len(COUNT_NAMES)])
    return {f"{prefix}wer": we / max(words, 1.0), f"{prefix}cer": ce / max(chars, 1.0),
            f"{prefix}accuracy": correct / max(n, 1.0)}


def score(refs: Sequence[str], hyps: Sequence[str]) -> dict[str, float]:
    """accuracy, wer, cer of whole lists (e.g. `lmstack evaluate --model DIR --data WAV_DIR`)."""
    return from_counts(edit_counts(refs, hyps))
