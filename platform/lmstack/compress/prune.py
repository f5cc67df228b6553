"""Magnitude pruning with torch.nn.utils.prune, made permanent so the result is a plain model.

Unstructured (`l1_unstructured`): in every prunable layer the `amount` fraction of weights with the
smallest |w| become zero. Structured (`ln_structured`, L2 norm): whole output channels (rows of a
Linear, columns of GPT-2's Conv1D) become zero. Either way the tensors keep their shapes, so the
safetensors file is as large as before: the gain is sparsity (nonzero parameters), which a sparse
kernel or a later shrinking step could use; this module does not shrink matrices.

Prunable: the transformer blocks' Linear / Conv1D layers. Embeddings, norms and output heads
(the LM head, often tied to the embedding, and the classification head) are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.utils import prune

HEAD_NAMES = ("lm_head", "score", "classifier")


def prunable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module, int]]:
    """(name, module, output-channel dim) of each layer to prune."""
    from transformers.pytorch_utils import Conv1D

    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = []
    for name, m in model.named_modules():
        if m is out or name.split(".")[-1] in HEAD_NAMES:
            continue
        if isinstance(m, torch.nn.Linear):
            layers.append((name, m, 0))  # weight [out, in]
        elif isinstance(m, Conv1D):
            layers.append((name, m, 1))  # weight [in, out]
    return layers


def prune_model(model: torch.nn.Module, amount: float, structured: bool = False) -> dict[str, Any]:
    """Prune `model` in place and make it permanent; returns the achieved sparsity per layer."""
    if not 0 < amount < 1:
        raise ValueError(f"--amount must be between 0 and 1 (exclusive), got {amount}")
    layers = prunable(model)
    if not layers:
        raise ValueError("the model has no Linear or Conv1D layers to prune")
    per_layer: dict[str, float] = {}
    zeros = total = 0
    with torch.no_grad():
        for name, m, dim in layers:
            if structured:
                prune.ln_structured(m, "weight", amount=amount, n=2, dim=dim)
            else:
                prune.l1_unstructured(m, "weight", amount=amount)
            prune.remove(m, "weight")  # weight = weight_orig * mask, as a plain parameter again
            z = int((m.weight == 0).sum())
            per_layer[name] = z / m.weight.numel()
            zeros, total = zeros + z, total + m.weight.numel()
    return {
        "method": "ln_structured" if structured else "l1_unstructured",
        "amount": amount,
        "layers": len(layers),
        "pruned_weights": total,
        "sparsity": zeros / total,
        "sparsity_by_layer": per_layer,
    }
