"""Loading an exported translation model once per process, for predict, evaluate and Ray Serve."""

from __future__ import annotations

from lmstack.artifacts import cache_per_export, model_manifest

lineage = model_manifest


@cache_per_export(maxsize=4)
def load(model_dir: str):
    """(model, tokenizer, max_length) of an exported translate model, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, MarianMTModel

    from lmstack.data.tokenizer import load_tokenizer
    from lmstack.models.loading import load_pretrained

    section = (lineage(model_dir).get("recipe") or {}).get("translate") or {}
    tok = load_tokenizer(model_dir)
    if section.get("arch") == "decoder":
        model = load_pretrained(AutoModelForCausalLM, model_dir, dtype=torch.float32)
        max_length = int(section.get("max_length", 64))
    else:
        model = load_pretrained(MarianMTModel, model_dir, dtype=torch.float32)
        max_length = int(model.config.max_position_embeddings) - 2
    model.eval()
    return model, tok, max_length
