"""Dynamic int8 quantization (torch.ao) of a model's Linear layers, saved without pickles.

GPT-2 builds its attention and MLP projections from transformers' `Conv1D` (x @ W + b with W stored
[in, out]), which `quantize_dynamic` does not know. `conv1d_to_linear` swaps each for the equivalent
`nn.Linear` (W transposed) first; outputs are unchanged. Output layers whose weight is tied to the
input embedding stay float: quantizing them would store the embedding twice.

torch's quantized modules only serialize through pickle (`torch.save`); the serving rule is
safetensors only. So `save_quantized` writes the int8 weights, their per-channel scales and zero
points and every float tensor to `quantized.safetensors`, and `load_quantized` rebuilds the model:
config -> float model -> the same Conv1D swap -> quantize_dynamic on the same layers -> the stored
int8 weights put back with `set_weight_bias`.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmstack.compress.load import QUANT_MANIFEST, auto_class, copy_side_files, model_kind

WEIGHTS_FILE = "quantized.safetensors"
FORMAT = "lmstack-int8-dynamic-v1"


def conv1d_to_linear(model: torch.nn.Module) -> int:
    """Replace every transformers Conv1D by an equal nn.Linear, in place; returns how many."""
    from transformers.pytorch_utils import Conv1D

    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                n_in, n_out = child.weight.shape
                linear = torch.nn.Linear(n_in, n_out, bias=child.bias is not None,
                                         dtype=child.weight.dtype, device=child.weight.device)
                with torch.no_grad():
                    linear.weight.copy_(child.weight.t())
                    if child.bias is not None:
                        linear.bias.copy_(child.bias)
                setattr(parent, name, linear)
                swapped += 1
    return swapped


def quantizable(model: torch.nn.Module) -> list[str]:
    """Names of the nn.Linear layers to quantize: all but output layers tied to the input embedding."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = emb.weight if emb is not None else None
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.weight is not tied]


def _quantize_dynamic(model: torch.nn.Module, names: list[str]) -> torch.nn.Module:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notice in favour of torchao (not installed)
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {n: per_channel_dynamic_qconfig for n in names}, dtype=torch.qint8)


def quantize(model: torch.nn.Module) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(int8 model, facts) from a float model; the float model is modified (Conv1D swap)."""
    model.eval()
    swapped = conv1d_to_linear(model)
    names = quantizable(model)
    if not names:
        raise ValueError("the model has no Linear (or Conv1D) layers to quantize")
    return _quantize_dynamic(model, names), {"conv1d_converted": swapped, "modules": names}


def _qlinear_type():
    from torch.ao.nn.quantized.dynamic import Linear

    return Linear


def quantized_tensors(qmodel: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Every tensor needed to rebuild `qmodel`, as plain (non-quantized) tensors."""
    qlinear = _qlinear_type()
    tensors: dict[str, torch.Tensor] = {}
    for name in names:
        m = qmodel.get_submodule(name)
        assert isinstance(m, qlinear), name
        w = m.weight()
        tensors[f"{name}.weight_int8"] = w.int_repr().contiguous()
        tensors[f"{name}.weight_scales"] = w.q_per_channel_scales().float().contiguous()
        tensors[f"{name}.weight_zero_points"] = w.q_per_channel_zero_points().to(torch.int32).contiguous()
        if m.bias() is not None:
            tensors[f"{name}.bias"] = m.bias().detach().contiguous()
    seen: set[int] = set()
    for key, value in qmodel.state_dict(keep_vars=False).items():
        if not isinstance(value, torch.Tensor) or any(key.startswith(n + ".") for n in names):
            continue
        ptr = value.data_ptr()
        if ptr in seen:  # tied weights are stored once; tie_weights() restores the alias on load
            continue
        seen.add(ptr)
        tensors[key] = value.detach().contiguous()
    return tensors


def save_quantized(qmodel: torch.nn.Module, facts: dict[str, Any], src_dir: str, out_dir: str) -> str:
    """Write an int8 model directory: quantized.safetensors + lmstack_quant.json + the source's side files."""
    copy_side_files(src_dir, out_dir)
    tensors = quantized_tensors(qmodel, facts["modules"])
    save_file(tensors, os.path.join(out_dir, WEIGHTS_FILE), metadata={"format": FORMAT})
    manifest = {"format": FORMAT, "dtype": "qint8", "scheme": "per_channel_affine", "axis": 0,
                "kind": model_kind(src_dir), **facts}
    with open(os.path.join(out_dir, QUANT_MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    return out_dir


def load_quantized(model_dir: str) -> torch.nn.Module:
    """Rebuild the int8 model saved by save_quantized (no pickle is read)."""
    from transformers import AutoConfig

    with open(os.path.join(model_dir, QUANT_MANIFEST)) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{model_dir}/{QUANT_MANIFEST}: unknown format {manifest.get('format')!r}")
    names: list[str] = manifest["modules"]
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    model = auto_class(manifest["kind"]).from_config(config).eval()
    conv1d_to_linear(model)
    tensors = load_file(os.path.join(model_dir, WEIGHTS_FILE))
    floats = {k: v for k, v in tensors.items() if not any(k.startswith(n + ".") for n in names)}
    missing, unexpected = model.load_state_dict(floats, strict=False)
    emb = model.get_input_embeddings()
    params = dict(model.named_parameters(remove_duplicate=False))
    # Missing is fine for the quantized layers (set below) and for aliases of the input embedding.
    untied = [k for k in missing
              if not any(k.startswith(n + ".") for n in names) and params.get(k) is not emb.weight]
    if unexpected or untied:
        raise ValueError(f"{model_dir}/{WEIGHTS_FILE}: tensors do not fit the config "
                         f"(unexpected {unexpected[:3]}, missing {untied[:3]})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    qmodel = _quantize_dynamic(model, names)
    for name in names:
        qweight = torch._make_per_channel_quantized_tensor(
            tensors[f"{name}.weight_int8"],
            tensors[f"{name}.weight_scales"].double(),
            tensors[f"{name}.weight_zero_points"].long(),
            manifest.get("axis", 0),
        )
        qmodel.get_submodule(name).set_weight_bias(qweight, tensors.get(f"{name}.bias"))
    return qmodel

