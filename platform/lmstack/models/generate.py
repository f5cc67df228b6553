"""Sampling from an exported model (temperature, top-k) with plain transformers."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from lmstack.models.factory import load_causal_lm


@torch.no_grad()
def sample(model: torch.nn.Module, ids: torch.Tensor, max_new_tokens: int, temperature: float,
           top_k: int | None, context: int) -> torch.Tensor:
    """Autoregressive sampling that keeps the last `context` tokens, so it can run past the model's
    position limit (HF `generate` stops at n_positions for absolute-position models)."""
    for _ in range(max_new_tokens):
        logits = model(input_ids=ids[:, -context:]).logits[:, -1, :] / temperature
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1, None]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def generate(model_dir: str, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = 50, seed: int | None = None) -> str:
    if seed is not None:
        torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = load_causal_lm(model_dir).eval()
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    if ids.shape[1] == 0:
        ids = torch.tensor([[tok.eos_token_id]])
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    out = sample(model, ids, max_new_tokens, temperature, top_k, context)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
