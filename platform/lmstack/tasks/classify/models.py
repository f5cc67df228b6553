"""Sequence-classification models on a decoder LM, and what each torch strategy does to them.

full: every weight trains. freeze: the lowest k blocks (and the embeddings) stop training, and/or
layer-wise lr decay scales each block's lr by decay^(depth from the top). lora: peft adapters on the
attention projections, merged into plain weights on export. multitask: one backbone, the primary
head plus one head per extra label field, trained on mixed batches.
"""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from lmstack.config import Recipe
from lmstack.models.factory import causal_lm_config
from lmstack.models.loading import load_pretrained

_BLOCK = re.compile(r"(?:^|\.)(?:h|layers)\.(\d+)\.")
_EMBED = ("wte.", "wpe.", "embed_tokens.")
EXTRA_HEADS = "extra_heads.safetensors"
EXTRA_HEADS_INFO = "extra_heads.json"


def block_index(name: str) -> int | None:
    m = _BLOCK.search(name)
    return int(m.group(1)) if m else None


def is_embedding(name: str) -> bool:
    return any(k in name for k in _EMBED)


def num_layers(config) -> int:
    return int(getattr(config, "n_layer", None) or config.num_hidden_layers)


def _label_config(config, info: dict[str, Any]) -> None:
    labels = info["labels"]
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.pad_token_id = info["pad_id"]  # the head pools the last token that is not padding
    config.problem_type = "single_label_classification"


def sequence_classifier(recipe: Recipe, info: dict[str, Any]) -> PreTrainedModel:
    """GPT2/LlamaForSequenceClassification: from the pretrained lmstack model, or fresh from `model`."""
    src = recipe.finetune.from_model
    if src:
        config = AutoConfig.from_pretrained(src, local_files_only=True)
        _label_config(config, info)
        # Dropout is a training setting: the recipe's model.dropout applies to fine-tuning as well, so a
        # pretrained and a from-scratch run of the same recipe differ only in their initial weights.
        for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout"):
            if hasattr(config, key):
                setattr(config, key, recipe.model.dropout)
        return load_pretrained(AutoModelForSequenceClassification, src, "finetune.from_model", config=config)
    config = causal_lm_config(recipe.model, info["tokenizer"]["vocab_size"], info["max_length"], info["eos_id"])
    _label_config(config, info)
    return AutoModelForSequenceClassification.from_config(config)


def freeze_lowest(model: nn.Module, k: int, embeddings: bool = True) -> list[str]:
    """requires_grad=False on blocks 0..k-1 (and the embeddings); returns the frozen names."""
    frozen = []
    for name, p in model.named_parameters():
        b = block_index(name)
        if (b is not None and b < k) or (embeddings and k > 0 and is_embedding(name)):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


def layer_decay_groups(model: nn.Module, n_layers: int, decay: float, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups with lr_scale = decay^depth: head and final norm 1, top block decay, ...,
    embeddings decay^(n_layers + 1) (ULMFiT / BEiT-style discriminative fine-tuning)."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        b = block_index(name)
        depth = n_layers - b if b is not None else (n_layers + 1 if is_embedding(name) else 0)
        key = (decay**depth, weight_decay if p.dim() >= 2 else 0.0)
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "lr_scale": scale, "weight_decay": wd} for (scale, wd), ps in sorted(groups.items())]


def lora_wrap(model: PreTrainedModel, recipe: Recipe) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    cfg = recipe.finetune.lora
    gpt2 = model.config.model_type == "gpt2"
    targets = cfg.target_modules or (["c_attn"] if gpt2 else ["q_proj", "v_proj"])
    lcfg = LoraConfig(
        task_type=TaskType.SEQ_CLS,  # peft then also trains (and saves) the new `score` head
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        fan_in_fan_out=gpt2,  # GPT-2's Conv1D stores weights transposed
    )
    return get_peft_model(model, lcfg)


def last_token_index(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """The position transformers' *ForSequenceClassification pools: the rightmost non-pad token."""
    if pad_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[1] - 1, device=input_ids.device)
    non_pad = (input_ids != pad_id).int()
    pos = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    return (pos * non_pad).argmax(-1)


class MultiTaskClassifier(nn.Module):
    """A transformers sequence classifier (the primary head) plus extra linear heads on its pooled state."""

    def __init__(self, primary: PreTrainedModel, heads: dict[str, int]):
        super().__init__()
        self.primary = primary
        hidden = primary.config.hidden_size
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n, bias=False) for name, n in heads.items()})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        out = self.primary.base_model(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        idx = last_token_index(input_ids, self.primary.config.pad_token_id)
        pooled = h[torch.arange(h.shape[0], device=h.device), idx]
        return self.primary.score(pooled), {name: head(pooled) for name, head in self.heads.items()}


def build_classifier(recipe: Recipe, info: dict[str, Any]) -> nn.Module:
    ft = recipe.finetune
    model = sequence_classifier(recipe, info)
    if ft.strategy == "freeze":
        freeze_lowest(model, ft.freeze_layers, ft.freeze_embeddings)
    elif ft.strategy == "lora":
        model = lora_wrap(model, recipe)
    elif ft.strategy == "multitask":
        model = MultiTaskClassifier(model, {f: len(v) for f, v in info["extra_labels"].items()})
    if recipe.classify and recipe.classify.class_weights == "balanced":
        # Not persistent: a training-time setting, not part of the exported weights.
        model.register_buffer("lmstack_class_weights", torch.tensor(info["class_weights"]), persistent=False)
    return model


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "merge_and_unload") and hasattr(model, "peft_config")


def export_classifier(model: nn.Module, out_dir: str) -> None:
    """A plain transformers directory (AutoModelForSequenceClassification loads it)."""
    from safetensors.torch import save_file

    if isinstance(model, MultiTaskClassifier):
        model.primary.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model.heads.state_dict().items()},
                  os.path.join(out_dir, EXTRA_HEADS))
        with open(os.path.join(out_dir, EXTRA_HEADS_INFO), "w") as f:
            json.dump({name: head.out_features for name, head in model.heads.items()}, f)
        return
    if is_peft(model):
        # Merge a copy: the training model keeps its adapters (training continues after a checkpoint).
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)

