"""CTC acoustic models over log-mel features: a convolutional front end that subsamples time, then a
transformer, a conformer (Gulati et al. 2020) or a bidirectional LSTM/GRU, then a linear layer onto
the characters plus the blank. The shape lives in one JSON-able dict (`arch_config`), which the export
writes next to the safetensors weights."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

FRONT_CHANNELS = 32


def arch_config(arch: str, n_mels: int, vocab_size: int, d_model: int, n_layers: int, n_heads: int,
                ff_mult: int = 4, dropout: float = 0.1, subsample: int = 4, conv_kernel: int = 15) -> dict[str, Any]:
    return {"arch": arch, "n_mels": n_mels, "vocab_size": vocab_size, "d_model": d_model, "n_layers": n_layers,
            "n_heads": n_heads, "ff_mult": ff_mult, "dropout": dropout, "subsample": subsample,
            "conv_kernel": conv_kernel}


class ConvFrontEnd(nn.Module):
    """log2(subsample) stride-2 3x3 convolutions over (time, mel); subsample 1: one stride (1, 2)."""

    def __init__(self, n_mels: int, d_model: int, subsample: int):
        super().__init__()
        stages = max(1, int(math.log2(subsample)))
        strides = [(2, 2)] * stages if subsample > 1 else [(1, 2)]
        convs = []
        c_in, freq = 1, n_mels
        for s in strides:
            convs.append(nn.Conv2d(c_in, FRONT_CHANNELS, 3, stride=s, padding=1))
            c_in, freq = FRONT_CHANNELS, (freq + 1) // 2
        self.convs = nn.ModuleList(convs)
        self.time_strides = [s[0] for s in strides]
        self.proj = nn.Linear(FRONT_CHANNELS * freq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.unsqueeze(1)  # [B, 1, T, F]
        for conv, s in zip(self.convs, self.time_strides, strict=True):
            # Zero the padding before each kernel: an utterance scores the same in any batch.
            keep = torch.arange(x.shape[2], device=x.device)[None, :] < lengths[:, None]
            x = F.gelu(conv(x * keep[:, None, :, None]))
            lengths = torch.div(lengths + s - 1, s, rounding_mode="floor")  # ceil: kernel 3, padding 1
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        return x, lengths.clamp(min=1, max=t)


def sinusoids(length: int, dim: int, device: torch.device) -> torch.Tensor:
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


class FeedForward(nn.Sequential):
    def __init__(self, d: int, mult: int, dropout: float):
        super().__init__(nn.LayerNorm(d), nn.Linear(d, mult * d), nn.SiLU(), nn.Dropout(dropout),
                         nn.Linear(mult * d, d), nn.Dropout(dropout))


class ConvModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv, norm, SiLU, pointwise conv. Padded frames are zeroed right
    before the depthwise kernel so they do not leak into real ones. LayerNorm, not BatchNorm: batch statistics
    would mix in the padding."""

    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Conv1d(d, 2 * d, 1)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.mid_norm = nn.LayerNorm(d)
        self.pw2 = nn.Conv1d(d, d, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm(x).transpose(1, 2)), dim=1)
        y = self.dw(y.masked_fill(pad[:, None, :], 0.0)).transpose(1, 2)
        y = F.silu(self.mid_norm(y)).transpose(1, 2)
        return self.drop(self.pw2(y).transpose(1, 2))


class ConformerBlock(nn.Module):
    def __init__(self, d: int, heads: int, mult: int, kernel: int, dropout: float):
        super().__init__()
        self.ff1 = FeedForward(d, mult, dropout)
        self.attn_norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.attn_drop = nn.Dropout(dropout)
        self.conv = ConvModule(d, kernel, dropout)
        self.ff2 = FeedForward(d, mult, dropout)
        self.out_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        y = self.attn_norm(x)
        x = x + self.attn_drop(self.attn(y, y, y, key_padding_mask=pad, need_weights=False)[0])
        x = x + self.conv(x, pad)
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class CTCModel(nn.Module):
    """features [B, T, n_mels] + lengths [B] -> log-probabilities [B, T', vocab] + lengths [B]."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.arch_config = dict(cfg)
        arch, d, layers = cfg["arch"], cfg["d_model"], cfg["n_layers"]
        self.front = ConvFrontEnd(cfg["n_mels"], d, cfg["subsample"])
        self.drop = nn.Dropout(cfg["dropout"])
        if arch == "transformer":
            layer = nn.TransformerEncoderLayer(d, cfg["n_heads"], cfg["ff_mult"] * d, cfg["dropout"],
                                               activation="gelu", batch_first=True, norm_first=True)
            self.encoder: nn.Module = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d),
                                                            enable_nested_tensor=False)
        elif arch == "conformer":
            self.encoder = nn.ModuleList(ConformerBlock(d, cfg["n_heads"], cfg["ff_mult"], cfg["conv_kernel"],
                                                        cfg["dropout"]) for _ in range(layers))
        elif arch in ("lstm", "gru"):
            rnn = nn.LSTM if arch == "lstm" else nn.GRU
            self.encoder = rnn(d, d // 2, num_layers=layers, batch_first=True, bidirectional=True,
                               dropout=cfg["dropout"] if layers > 1 else 0.0)
        else:
            raise ValueError(f"speech.arch: unknown architecture {arch!r}")
        self.head = nn.Linear(d if arch not in ("lstm", "gru") else 2 * (d // 2), cfg["vocab_size"])

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.front(features.float(), lengths.long())
        t = x.shape[1]
        pad = torch.arange(t, device=x.device)[None, :] >= lengths[:, None]
        arch = self.arch_config["arch"]
        if arch in ("lstm", "gru"):
            packed = nn.utils.rnn.pack_padded_sequence(self.drop(x), lengths.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            x = nn.utils.rnn.pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=t)[0]
        else:
            x = self.drop(x + sinusoids(t, x.shape[-1], x.device))
            if arch == "transformer":
                x = self.encoder(x, src_key_padding_mask=pad)
            else:
                for block in self.encoder:
                    x = block(x, pad)
        return F.log_softmax(self.head(x).float(), dim=-1), lengths


def ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, labels: torch.Tensor,
             label_lengths: torch.Tensor) -> torch.Tensor:
    """Per-utterance CTC loss, averaged over the batch. zero_infinity: an utterance too short for its
    labels (prepare rejects those, but SpecAugment cannot shorten, so this is a guard) adds no NaN."""
    loss = F.ctc_loss(log_probs.transpose(0, 1), labels.long(), out_lengths.long(), label_lengths.long(),
                      blank=0, reduction="none", zero_infinity=True)
    return loss.mean()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
