"""A small MarianMT encoder-decoder built from a config (from scratch; nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import torch

from lmstack.config import ModelConfig


def build_seq2seq(cfg: ModelConfig, info: dict[str, Any]) -> torch.nn.Module:
    """Marian shape from the recipe's model section: n_layer encoder and n_layer decoder layers."""
    from transformers import MarianConfig, MarianMTModel

    if cfg.path:
        from lmstack.models.loading import load_pretrained

        return load_pretrained(MarianMTModel, cfg.path, "model.path")
    config = MarianConfig(
        vocab_size=info["tokenizer"]["vocab_size"],
        d_model=cfg.n_embd,
        encoder_layers=cfg.n_layer,
        decoder_layers=cfg.n_layer,
        encoder_attention_heads=cfg.n_head,
        decoder_attention_heads=cfg.n_head,
        encoder_ffn_dim=cfg.intermediate_size or 4 * cfg.n_embd,
        decoder_ffn_dim=cfg.intermediate_size or 4 * cfg.n_embd,
        dropout=cfg.dropout,
        attention_dropout=cfg.dropout,
        activation_function="gelu",
        max_position_embeddings=info["max_length"] + 2,
        pad_token_id=info["pad_id"],
        eos_token_id=info["eos_id"],
        # Marian starts decoding from the pad token; shift_tokens_right uses it for teacher forcing.
        decoder_start_token_id=info["pad_id"],
        forced_eos_token_id=None,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=cfg.tie_embeddings,
    )
    return MarianMTModel(config)
