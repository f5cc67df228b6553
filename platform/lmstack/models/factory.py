"""Decoder-only language models from transformers configs, or from a local HF model directory."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig

from lmstack.config import ModelConfig
from lmstack.models.loading import load_pretrained, require_safetensors


def causal_lm_config(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> PretrainedConfig:
    if cfg.family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=context,
            n_embd=cfg.n_embd,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=cfg.intermediate_size,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
            tie_word_embeddings=cfg.tie_embeddings,
            # The compact decoder trains with the exact (erf) GELU, as nanoGPT does: one fused kernel, and on
            # CPU cheaper than the tanh form; transformers' "gelu" is the same function.
            **({"activation_function": "gelu"} if cfg.impl == "lmstack" else {}),
        )
    return LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=context,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.intermediate_size or 4 * cfg.n_embd,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head or cfg.n_head,
        attention_dropout=cfg.dropout,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=cfg.tie_embeddings,
    )


def causal_loss(model: torch.nn.Module) -> torch.nn.Module:
    """Name the model's loss: transformers finds it from the class name, and GPT2LMHeadModel's does not
    end in ForCausalLM, so every forward with labels logged "`loss_type=None` ... unrecognized". The loss
    is the same next-token cross-entropy that the notice falls back to."""
    if getattr(model, "loss_type", "ForCausalLM") is None:
        model.loss_type = "ForCausalLM"
    return model


def load_causal_lm(path: str, **kwargs) -> torch.nn.Module:
    return causal_loss(load_pretrained(AutoModelForCausalLM, path, **kwargs))


def build_causal_lm(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> torch.nn.Module:
    """A fresh model from the recipe's shape, or the local model at `cfg.path`; with `cfg.impl == "lmstack"`
    lmstack's compact decoder (lmstack.models.gpt), which exports the same transformers directory."""
    return causal_loss(_build_causal_lm(cfg, vocab_size, context, eos_id))


def _build_causal_lm(cfg: ModelConfig, vocab_size: int, context: int, eos_id: int) -> torch.nn.Module:
    if cfg.impl == "lmstack":
        from lmstack.models.gpt import CompactCausalLM

        if not cfg.path:
            return CompactCausalLM(causal_lm_config(cfg, vocab_size, context, eos_id))
        require_safetensors(cfg.path, "model.path")
        model = CompactCausalLM.from_pretrained(cfg.path)
        if model.get_input_embeddings().num_embeddings < vocab_size:
            model.resize_token_embeddings(vocab_size)
        return model
    if cfg.path:
        model = load_pretrained(AutoModelForCausalLM, cfg.path, "model.path")
        if model.get_input_embeddings().num_embeddings < vocab_size:
            model.resize_token_embeddings(vocab_size)
        return model
    return AutoModelForCausalLM.from_config(causal_lm_config(cfg, vocab_size, context, eos_id))

