"""The transfer route: a decoder-only LM trained on "[tag] source <eos> target <eos>" rows.

The prepared rows are the encoder-decoder's (source ids, target labels), so one prepared data dir serves
both architectures; each batch is concatenated here. The loss covers the target tokens only, so val_loss
is per target token exactly as for the encoder-decoder.
"""

from __future__ import annotations

from typing import Any

import torch

from lmstack.config import ModelConfig, RecipeError
from lmstack.tasks.translate.data import encode_source


def concat_batch(batch: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """Per row: source tokens then target tokens, right-padded; labels are -100 except on the target."""
    src_len = batch["attention_mask"].long().sum(1)
    labels = batch["labels"].long()
    tgt_len = (labels != -100).sum(1)
    n, width = labels.shape[0], int((src_len + tgt_len).max())
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    out_labels = torch.full((n, width), -100, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i in range(n):
        s, t = int(src_len[i]), int(tgt_len[i])
        input_ids[i, :s] = batch["input_ids"][i, :s]
        input_ids[i, s:s + t] = labels[i, :t]
        out_labels[i, s:s + t] = labels[i, :t]
        mask[i, :s + t] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": out_labels}


def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], pad_id: int,
         label_smoothing: float) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over target tokens (label-smoothed in training when asked) and their count."""
    rows = concat_batch(batch, pad_id)
    logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
    shifted = rows["labels"][:, 1:]
    smoothing = label_smoothing if model.training else 0.0
    value = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), shifted.flatten(), ignore_index=-100, label_smoothing=smoothing,
    )
    return value, int((shifted != -100).sum())


def build_decoder(cfg: ModelConfig, info: dict[str, Any]) -> torch.nn.Module:
    """A fresh causal LM of the recipe's shape, or the pretrained LM at model.path (checked to fit)."""
    from lmstack.models import build_causal_lm

    vocab = info["tokenizer"]["vocab_size"]
    context = 2 * info["max_length"]  # a source and a target, each at most max_length tokens
    model = build_causal_lm(cfg, vocab, context, info["eos_id"])
    check_fits(model.config, vocab, context, cfg.path)
    return model


def preflight(cfg: ModelConfig, info: dict[str, Any]) -> None:
    """On the driver, before any cluster work: the LM at model.path must use this data's tokenizer (same
    vocabulary, not merely the same size) and hold a source and a target in its context."""
    import os

    from transformers import AutoConfig

    from lmstack.data.tokenizer import load_tokenizer

    if not cfg.path:
        return
    if not os.path.isfile(os.path.join(cfg.path, "config.json")):
        raise FileNotFoundError(f"model.path {cfg.path}: no config.json (not an exported model directory)")
    check_fits(AutoConfig.from_pretrained(cfg.path, local_files_only=True), info["tokenizer"]["vocab_size"],
               2 * info["max_length"], cfg.path)
    if os.path.isfile(os.path.join(cfg.path, "tokenizer.json")):
        if load_tokenizer(cfg.path).get_vocab() != load_tokenizer(info["tokenizer"]["dir"]).get_vocab():
            raise RecipeError(f"model.path {cfg.path}: its tokenizer is not the translate data's "
                             f"({info['tokenizer']['dir']}); pretrain the LM with tokenizer {{kind: pretrained, "
                             f"path: {info['tokenizer']['dir']}}}")


def check_fits(config: Any, vocab: int, context: int, path: str | None) -> None:
    """A user's model that cannot take this data: RecipeError (one line in the CLI, not a traceback)."""
    where = f"model.path {path}" if path else "model"
    got_vocab = config.vocab_size
    got_context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 0)
    if got_vocab != vocab:
        raise RecipeError(f"{where}: vocabulary {got_vocab} is not the translate tokenizer's ({vocab}); pretrain the "
                         "LM with tokenizer {kind: pretrained, path: <this recipe's data dir>/tokenizer}")
    if got_context < context:
        raise RecipeError(f"{where}: context {got_context} is shorter than source + target (2 x translate.max_length "
                         f"= {context}); pretrain with data.block_size >= {context}")


@torch.no_grad()
def translate(model, tokenizer, texts: list[str], direction: str, num_beams: int = 4, length_penalty: float = 1.0,
              max_new_tokens: int = 64, batch_size: int = 64, max_length: int = 64) -> list[str]:
    """Continuations of the left-padded "[tag] source <eos>" prompts (generate derives positions from the mask)."""
    model.eval()
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, _ = encode_source(tokenizer, [texts[i] for i in idx], direction, max_length)
        prompts = tokenizer.pad({"input_ids": ids}, padding_side="left", return_tensors="pt")
        width = prompts["input_ids"].shape[1]
        seqs = model.generate(
            **prompts, num_beams=num_beams, do_sample=False, length_penalty=length_penalty,
            early_stopping=num_beams > 1, max_new_tokens=min(max_new_tokens, context - width),
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        for i, text in zip(idx, tokenizer.batch_decode(seqs[:, width:], skip_special_tokens=True), strict=True):
            out[i] = text.strip()
    return out
