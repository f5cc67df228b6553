"""lmstack's compact decoder: GPT-2 and Llama shapes in plain PyTorch, exported as transformers models.

Why it exists: on small models the transformers modules spend most of a training step outside the matmuls
(GPT-2's `gelu_new` is eight separate elementwise kernels forward and more backward, masks are rebuilt per
call, the loss pads and re-shifts labels). This module keeps the same parameters under the same names and
layouts as `GPT2LMHeadModel` / `LlamaForCausalLM` (GPT-2's projections keep HF's Conv1D (in, out) layout),
so a state dict moves either way unchanged, and `save_pretrained` writes a plain transformers directory that
`AutoModelForCausalLM.from_pretrained` loads: serving, generation, evaluation and compression never see
this class. Attention is `scaled_dot_product_attention(is_causal=True)`: no mask is built unless a padding
mask with zeros is passed. The configuration is the transformers config itself (`model.config`).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PretrainedConfig

WEIGHTS = "model.safetensors"
ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}
# transformers activation names -> F.gelu's `approximate`; gelu_new/gelu_fast are the tanh formula.
_GELU = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}
# Buffers old GPT-2 checkpoints carry (the causal mask); never parameters.
_IGNORED_KEYS = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


@dataclass
class CausalLMOutput:
    """What the code reads from transformers' outputs: `.loss` (None without labels) and `.logits`."""

    loss: torch.Tensor | None
    logits: torch.Tensor


class UnsupportedConfig(ValueError):
    """A transformers config this module cannot reproduce exactly (use model.impl: hf for it)."""


def check_supported(config: PretrainedConfig) -> None:
    """Refuse configs whose forward pass this module would silently compute differently."""
    kind = config.model_type
    if kind == "gpt2":
        problems = {
            "activation_function": config.activation_function not in (*_GELU, "relu", "silu", "swish"),
            "scale_attn_weights": not config.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": config.scale_attn_by_inverse_layer_idx,
            "add_cross_attention": config.add_cross_attention,
        }
    elif kind == "llama":
        rope = getattr(config, "rope_parameters", None) or {}
        problems = {
            "hidden_act": config.hidden_act != "silu",
            "rope_parameters": rope.get("rope_type", "default") != "default",
            "pretraining_tp": getattr(config, "pretraining_tp", 1) not in (None, 1),
        }
    else:
        raise UnsupportedConfig(f"model_type {kind!r}: the compact decoder has gpt2 and llama shapes; use impl: hf")
    bad = [k for k, v in problems.items() if v]
    if bad:
        raise UnsupportedConfig(f"{kind} config: {bad[0]}={getattr(config, bad[0])!r} is not supported by the compact "
                                "decoder; use model.impl: hf")


def _rope_theta(config: PretrainedConfig) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, p: float) -> torch.Tensor:
    if k.shape[1] != q.shape[1]:  # grouped KV heads: each KV head serves n_head / n_kv_head query heads
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) boolean mask: causal and not padding. A query that sees no key at all (a left-pad
    position) sees itself, so its row is finite rather than NaN; such positions carry no loss."""
    t = attention_mask.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=attention_mask.device).tril()
    keep = causal[None] & attention_mask[:, None, :].bool()
    keep |= torch.eye(t, dtype=torch.bool, device=attention_mask.device)
    return keep[:, None]


# -- GPT-2 shape -------------------------------------------------------------------------------------
class Conv1D(nn.Module):
    """GPT-2's projection with transformers' weight layout (in, out), so weights load without transposes."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.linear on the transposed view: nn.Linear's kernel path (measured a little faster than addmm on CPU).
        return F.linear(x, self.weight.t(), self.bias)


class GPT2Attention(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.n_head, width = config.n_head, config.n_embd
        self.c_attn = Conv1D(width, 3 * width)
        self.c_proj = Conv1D(width, width)
        self.attn_p = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4).unbind(0)
        y = _attend(q, k, v, mask, self.attn_p if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


class GPT2MLP(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(config.n_embd, inner)
        self.c_proj = Conv1D(inner, config.n_embd)
        self.act = config.activation_function
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.act in _GELU:  # one fused kernel (transformers' gelu_new is eight)
            h = F.gelu(h, approximate=_GELU[self.act])
        else:
            h = F.relu(h) if self.act == "relu" else F.silu(h)
        return self.dropout(self.c_proj(h))


class GPT2Block(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope: Any = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


# -- Llama shape -------------------------------------------------------------------------------------
def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class LlamaAttention(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.n_head, self.n_kv = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_head
        bias, width = bool(getattr(config, "attention_bias", False)), config.hidden_size
        self.q_proj = nn.Linear(width, self.n_head * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(width, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(width, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, width, bias=bias)
        self.attn_p = float(getattr(config, "attention_dropout", 0.0) or 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None,
                rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        y = _attend(q, k, v, mask, self.attn_p if self.training else 0.0)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class LlamaMLP(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, rope: Any = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), mask, rope)
        return x + self.mlp(self.post_attention_layernorm(x))


# -- the model ---------------------------------------------------------------------------------------
class CompactCausalLM(nn.Module):
    """A GPT-2- or Llama-shaped causal LM built from a transformers `GPT2Config` / `LlamaConfig`; call it
    like the transformers model: `model(input_ids=ids, labels=ids)` -> `.loss` (shifted inside), `.logits`."""

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        check_supported(config)
        self.config = config
        self.family = config.model_type
        self.gradient_checkpointing = False
        if self.family == "gpt2":
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.n_positions, config.n_embd),
                drop=nn.Dropout(config.embd_pdrop),
                h=nn.ModuleList(GPT2Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            ))
            width = config.n_embd
        else:
            self.model = nn.ModuleDict(dict(
                embed_tokens=nn.Embedding(config.vocab_size, config.hidden_size),
                layers=nn.ModuleList(LlamaBlock(config) for _ in range(config.num_hidden_layers)),
                norm=RMSNorm(config.hidden_size, config.rms_norm_eps),
            ))
            width = config.hidden_size
            head_dim = self.model.layers[0].self_attn.head_dim
            cos, sin = rope_tables(config.max_position_embeddings, head_dim, _rope_theta(config))
            # Not persistent: recomputed from the config, as transformers does, so state dicts match.
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(width, config.vocab_size, bias=False)
        self.reset_parameters()
        self.tie_weights()

    # -- transformers-compatible surface ------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.wte if self.family == "gpt2" else self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.get_input_embeddings().weight

    def layers(self) -> nn.ModuleList:
        """The decoder blocks (the units to shard with FSDP or to checkpoint)."""
        return self.transformer.h if self.family == "gpt2" else self.model.layers

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """transformers' GPT-2 init (normal(0, initializer_range), residual projections scaled by
        1/sqrt(2 n_layer), zero biases, unit norms); the same for Llama's o_proj/down_proj."""
        std = self.config.initializer_range
        n_layer = len(self.layers())
        for name, p in self.named_parameters():
            if p.dim() < 2:
                (p.zero_() if name.endswith("bias") else p.fill_(1.0))
            elif name.endswith(("c_proj.weight", "o_proj.weight", "down_proj.weight")):
                p.normal_(0.0, std / math.sqrt(2 * n_layer))
            else:
                p.normal_(0.0, std)

    def resize_token_embeddings(self, vocab_size: int) -> nn.Embedding:
        """Grow (or cut) the vocabulary; new rows start at the mean of the old ones."""
        old = self.get_input_embeddings()
        new = nn.Embedding(vocab_size, old.embedding_dim, device=old.weight.device, dtype=old.weight.dtype)
        keep = min(vocab_size, old.num_embeddings)
        with torch.no_grad():
            new.weight[:keep] = old.weight[:keep]
            new.weight[keep:] = old.weight.mean(0)
        if self.family == "gpt2":
            self.transformer.wte = new
        else:
            self.model.embed_tokens = new
        head = nn.Linear(old.embedding_dim, vocab_size, bias=False, device=new.weight.device, dtype=new.weight.dtype)
        if not self.config.tie_word_embeddings:
            with torch.no_grad():
                head.weight[:keep] = self.lm_head.weight[:keep]
                head.weight[keep:] = self.lm_head.weight.mean(0)
        self.lm_head = head
        self.config.vocab_size = vocab_size
        self.tie_weights()
        return new

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                use_cache: bool | None = None, return_dict: bool | None = None) -> CausalLMOutput:
        """`use_cache`/`return_dict` are accepted and ignored (no KV cache: generation runs on the exported
        transformers model). Labels of -100 are ignored, as in transformers."""
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = padding_mask(attention_mask)
        t = input_ids.shape[1]
        if self.family == "gpt2":
            tr = self.transformer
            pos = position_ids if position_ids is not None else torch.arange(t, device=input_ids.device)
            x = tr.drop(tr.wte(input_ids) + tr.wpe(pos))
            rope = None
        else:
            x = self.model.embed_tokens(input_ids)
            if position_ids is None:
                cos, sin = self.rope_cos[:t], self.rope_sin[:t]
            else:  # per-row positions: (B, 1, T, D) so they broadcast over heads
                cos, sin = self.rope_cos[position_ids][:, None], self.rope_sin[position_ids][:, None]
            rope = (cos.to(x.dtype), sin.to(x.dtype))
        for block in self.layers():
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, mask, rope, use_reentrant=False)
            else:
                x = block(x, mask, rope)
        x = self.transformer.ln_f(x) if self.family == "gpt2" else self.model.norm(x)
        logits = self.lm_head(x)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)

    # -- export / import ----------------------------------------------------------------------------
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under transformers' names (they are this module's names); a tied head is stored once,
        as transformers stores it."""
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        return state

    def save_pretrained(self, save_directory: str, safe_serialization: bool = True, **_: Any) -> None:
        """A plain transformers directory (config.json + model.safetensors) that
        `AutoModelForCausalLM.from_pretrained` loads as GPT2LMHeadModel / LlamaForCausalLM."""
        from safetensors.torch import save_file

        os.makedirs(save_directory, exist_ok=True)
        config = copy.deepcopy(self.config)
        config.architectures = [ARCHITECTURES[self.family]]
        config.dtype = str(self.dtype).removeprefix("torch.")
        config.save_pretrained(save_directory)
        state = {k: v.cpu() for k, v in self.hf_state_dict().items()}
        save_file(state, os.path.join(save_directory, WEIGHTS), metadata={"format": "pt"})

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load transformers-named weights; every parameter must be present (a tied head may be absent)."""
        state = {k: v for k, v in state.items() if not k.endswith(_IGNORED_KEYS)}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if self.config.tie_word_embeddings:
            missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise ValueError(f"weights do not fit the {self.family} shape: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}")
        self.tie_weights()

    @classmethod
    def from_pretrained(cls, path: str) -> CompactCausalLM:
        """A local transformers GPT-2/Llama directory (e.g. an lmstack export) as a compact module."""
        from transformers import AutoConfig

        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"model directory {path!r}: no config.json")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model = cls(config)
        model.load_hf_state_dict(dict(_read_weights(path)))
        return model


def _read_weights(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors.torch import load_file

    single = os.path.join(path, WEIGHTS)
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(single):
        yield from load_file(single).items()
    elif os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for shard in shards:
            yield from load_file(os.path.join(path, shard)).items()
    else:  # pytorch_model.bin and other pickle layouts are refused (they can run code when loaded)
        from lmstack.models.loading import require_safetensors

        require_safetensors(path)


def rope_tables(positions: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (positions, head_dim) exactly as transformers' default rotary embedding computes them."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a compact model or a transformers GPT-2/Llama model (for FSDP wrapping and
    activation checkpointing)."""
    core = getattr(model, "_orig_mod", model)  # torch.compile's wrapper
    core = getattr(core, "module", core)  # DDP's wrapper
    if isinstance(core, CompactCausalLM):
        return core.layers()
    if hasattr(core, "transformer"):
        return core.transformer.h
    return core.model.layers
