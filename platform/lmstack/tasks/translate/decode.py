"""Batched greedy and beam-search translation with a length penalty and a length cap."""

from __future__ import annotations

from typing import Any

import torch

from lmstack.tasks.translate.data import encode_source, pad


def _inputs(tokenizer, texts: list[str], direction: str, max_length: int) -> dict[str, torch.Tensor]:
    ids, _ = encode_source(tokenizer, texts, direction, max_length)
    width = max(len(s) for s in ids)
    return {
        "input_ids": torch.from_numpy(pad(ids, width, tokenizer.pad_token_id)).long(),
        "attention_mask": torch.from_numpy(pad([[1] * len(s) for s in ids], width, 0)).long(),
    }


def _generate(model, tokenizer, inputs, num_beams: int, length_penalty: float, max_new_tokens: int, **extra):
    return model.generate(
        **inputs,
        num_beams=num_beams,
        do_sample=False,
        length_penalty=length_penalty,
        max_new_tokens=max_new_tokens,
        early_stopping=True,
        decoder_start_token_id=model.config.decoder_start_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


@torch.no_grad()
def translate(
    model,
    tokenizer,
    texts: list[str],
    direction: str,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 64,
    max_length: int = 64,
) -> list[str]:
    """Translations of `texts`; num_beams=1 is greedy. Sources are sorted by length so batches pad little."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        inputs = _inputs(tokenizer, [texts[i] for i in idx], direction, max_length)
        seqs = _generate(model, tokenizer, inputs, num_beams, length_penalty, max_new_tokens)
        for i, text in zip(idx, tokenizer.batch_decode(seqs, skip_special_tokens=True), strict=True):
            out[i] = text.strip()
    return out


@torch.no_grad()
def beams(
    model, tokenizer, text: str, direction: str, num_beams: int, length_penalty: float = 1.0,
    max_new_tokens: int = 64, max_length: int = 64,
) -> list[dict[str, Any]]:
    """Every finished beam of one source with its score (sum log p / length ** length_penalty), best first."""
    model.eval()
    inputs = _inputs(tokenizer, [text], direction, max_length)
    res = _generate(
        model, tokenizer, inputs, num_beams, length_penalty, max_new_tokens,
        num_return_sequences=num_beams, output_scores=True, return_dict_in_generate=True,
    )
    return [
        {"ids": seq.tolist(), "text": tokenizer.decode(seq, skip_special_tokens=True).strip(), "score": float(s)}
        for seq, s in zip(res.sequences, res.sequences_scores, strict=True)
    ]


@torch.no_grad()
def sequence_score(model, tokenizer, text: str, direction: str, target_ids: list[int], length_penalty: float,
                   max_length: int = 64) -> float:
    """Teacher-forced score of one output (decoder start stripped, padding after EOS ignored)."""
    model.eval()
    inputs = _inputs(tokenizer, [text], direction, max_length)
    ids = list(target_ids)
    if ids and ids[0] == model.config.decoder_start_token_id:
        ids = ids[1:]
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id) + 1]
    labels = torch.tensor([ids])
    logits = model(**inputs, labels=labels).logits
    logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).sum()
    return float(logp) / (len(ids) ** length_penalty)
