"""Corpus BLEU and chrF with sacrebleu; Chinese references are scored with the `zh` tokenizer."""

from __future__ import annotations


def score(hypotheses: list[str], references: list[str], target_lang: str) -> dict[str, float]:
    import sacrebleu

    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh" if target_lang == "zh" else "13a")
    chrf = sacrebleu.corpus_chrf(hypotheses, [references])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2)}
