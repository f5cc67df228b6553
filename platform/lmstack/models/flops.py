"""Model FLOPs utilization: FLOPs per token from the model's shape, peak FLOPs from the device.

The count is the one of the PaLM paper (appendix B) and nanoGPT's `estimate_mfu`: a training token costs
6 FLOPs per matmul weight (2 forward, 4 backward) plus 12 * n_layer * n_head * head_dim * seq_len for the
attention scores and their weighted sum (full, not causal-halved, as both references count it). Input
embeddings (token lookups unless tied to the output head, learned positions) are lookups, not matmuls.
"""

from __future__ import annotations

import os

import torch

# Dense (no sparsity) tensor-core peaks in FLOP/s for bf16/fp16, from the vendors' datasheets; the first
# matching substring of the CUDA device name wins, so the more specific names come first.
PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 125e12),
    ("A10", 125e12),
    ("V100", 125e12),  # fp16 (no bf16 on Volta)
)
PEAK_ENV = "LMSTACK_PEAK_FLOPS"  # an explicit peak (FLOP/s) for devices the table does not know


def flops_per_token(n_matmul_params: int, n_layer: int, n_head: int, head_dim: int, seq_len: int) -> int:
    """Training FLOPs (forward + backward) per token: 6N + 12 * L * H * Q * T."""
    return 6 * n_matmul_params + 12 * n_layer * n_head * head_dim * seq_len


def _shape(config) -> tuple[int, int, int]:
    n_layer = getattr(config, "n_layer", None) or config.num_hidden_layers
    n_head = getattr(config, "n_head", None) or config.num_attention_heads
    hidden = getattr(config, "n_embd", None) or config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // n_head
    return int(n_layer), int(n_head), int(head_dim)


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that multiply activations: all of them (each tensor once) minus embedding lookups.
    A token embedding tied to the output head counts once, as the head's matmul."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out_weight = out.weight if out is not None else None
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    if out_weight is not None:
        lookups.discard(id(out_weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in lookups)


def model_flops_per_token(model: torch.nn.Module, seq_len: int) -> int:
    """FLOPs per trained token for an lmstack compact model or a transformers GPT-2/Llama model."""
    core = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    core = getattr(core, "module", core)  # DDP's wrapper
    n_layer, n_head, head_dim = _shape(core.config)
    return flops_per_token(matmul_params(core), n_layer, n_head, head_dim, seq_len)


def peak_flops(device: torch.device | str | None = None) -> float | None:
    """Peak bf16 FLOP/s of one device, or None when unknown (CPUs: no meaningful vendor peak here).
    LMSTACK_PEAK_FLOPS overrides the table."""
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV])
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def mfu(tokens_per_s: float, flops_per_tok: int, peak: float | None, n_devices: int = 1) -> float | None:
    """Model FLOPs utilization in [0, 1] (None without a known peak); tokens_per_s is the total over
    `n_devices` devices."""
    if not peak or tokens_per_s <= 0:
        return None
    return tokens_per_s * flops_per_tok / (peak * n_devices)
