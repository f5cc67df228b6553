"""Load any model directory lmstack exports (plain, pruned or int8) and predict with it.

A plain or pruned directory is an ordinary transformers directory (safetensors). An int8 directory
holds `quantized.safetensors` + `lmstack_quant.json` and is rebuilt by lmstack.compress.quantize.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch

from lmstack.artifacts import MODEL_MANIFEST, model_manifest
from lmstack.config import Unsupported
from lmstack.tasks import get_spec

QUANT_MANIFEST = "lmstack_quant.json"
# What compress can load and measure: model shapes, which a task spec names as its compress_kind.
CAUSAL_LM, CLASSIFIER = "causal_lm", "sequence_classifier"

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Everything in an exported directory except the weights: config, tokenizer, lineage.
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja", MODEL_MANIFEST)


def model_kind(model_dir: str) -> str:
    """How compress loads and measures the model (CAUSAL_LM or CLASSIFIER): its task spec's compress_kind.
    A transformers directory whose lineage names no task is read by its architecture."""
    task = model_manifest(model_dir).get("task") if os.path.exists(os.path.join(model_dir, MODEL_MANIFEST)) else None
    if task is not None:
        spec = get_spec(task)
        if spec.compress_kind is None:
            raise Unsupported(f"compress: task {spec.name!r} models cannot be compressed yet "
                              f"(only tasks whose models are transformers causal LMs or classifiers)")
        return spec.compress_kind
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    archs = config.architectures or []
    return CLASSIFIER if any(a.endswith("ForSequenceClassification") for a in archs) else CAUSAL_LM


def auto_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if kind == CLASSIFIER else AutoModelForCausalLM


def is_quantized(model_dir: str) -> bool:
    return os.path.exists(os.path.join(model_dir, QUANT_MANIFEST))


def load_model(model_dir: str) -> torch.nn.Module:
    """The model in eval mode, from safetensors only (a directory of pickles is refused)."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
    if is_quantized(model_dir):
        from lmstack.compress.quantize import load_quantized

        return load_quantized(model_dir).eval()
    from lmstack.models.loading import load_pretrained

    return load_pretrained(auto_class(model_kind(model_dir)), model_dir, "--model").eval()


def load_tokenizer(model_dir: str):
    from lmstack.data.tokenizer import load_tokenizer as load

    return load(model_dir)


def weight_bytes(model_dir: str) -> int:
    """Bytes of the weight files in a model directory (config and tokenizer not counted)."""
    return sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir)
               if f.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(model_dir, f)))


def copy_side_files(src: str, dst: str, skip: tuple[str, ...] = ()) -> None:
    os.makedirs(dst, exist_ok=True)
    for name in SIDE_FILES:
        if name not in skip and os.path.exists(os.path.join(src, name)):
            shutil.copy2(os.path.join(src, name), os.path.join(dst, name))


def context_length(model: torch.nn.Module) -> int:
    cfg = model.config
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None) or 512


def encode(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded ids and mask; the classification head reads the last non-pad token."""
    return tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt",
                     add_special_tokens=False)


@torch.no_grad()
def predict(model_dir: str, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    """Labels and class probabilities of a classification model directory (plain, pruned or int8)."""
    model, tok = load_model(model_dir), load_tokenizer(model_dir)
    return predict_with(model, tok, texts, batch_size)


@torch.no_grad()
def predict_with(model: torch.nn.Module, tok, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
    id2label = model.config.id2label
    out: list[dict[str, Any]] = []
    for i in range(0, len(texts), batch_size):
        enc = encode(tok, texts[i:i + batch_size], context_length(model))
        probs = torch.softmax(model(**enc).logits.float(), dim=-1)
        for row in probs:
            scores = {id2label[j]: float(p) for j, p in enumerate(row)}
            out.append({"label": id2label[int(row.argmax())], "scores": scores})
    return out
