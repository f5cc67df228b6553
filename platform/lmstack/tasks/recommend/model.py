"""The sequence models: SASRec (causal self-attention over item ids), GRU4Rec and popularity.

Every model maps left-padded item ids [B, L] to hidden states [B, L, d] and scores items by a dot
product with the (shared) item embedding table, so one loss and one ranking code serve all three.
Item ids: 0 padding, 1 unknown, 2.. items.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.tasks.recommend.metrics import PAD

CONFIG_FILE = "recommend_config.json"
WEIGHTS_FILE = "model.safetensors"


class Dropout(nn.Module):
    """Dropout from a uniform draw: on CPU about 3x faster than torch's bernoulli-based dropout, which
    took half of a SASRec training step (measured with torch.profiler)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class Block(nn.Module):
    """Pre-norm transformer block: multi-head self-attention (torch SDPA) under the given mask and a
    position-wise feed-forward layer (SASRec's is as wide as the model)."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), Dropout(dropout), nn.Linear(ffn, d))
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


def segments(ids: torch.Tensor, seg: torch.Tensor | None) -> torch.Tensor:
    """Segment ids [B, n]: 0 for padding, k for the k-th user's items in a packed training row. A plain
    left-padded history is one segment."""
    return (ids != PAD).long() if seg is None else seg.long()


def right_aligned_positions(ids: torch.Tensor, max_len: int) -> torch.Tensor:
    # Left padding puts the latest item at position max_len - 1 whatever the history's length.
    n = ids.shape[1]
    return torch.arange(max_len - n, max_len, device=ids.device).expand_as(ids)


class SequenceRecommender(nn.Module):
    """Shared parts: the item table (scores are dot products with it) and the config for export.

    hidden(ids, seg, positions) takes left-padded rows; training rows may pack several users' prefixes
    (seg tells them apart, positions restart right-aligned per user), so a batch carries few pads."""

    arch = "base"

    def __init__(self, num_items: int, d: int, max_len: int, **extra: Any) -> None:
        super().__init__()
        self.config = {"arch": self.arch, "num_items": num_items, "d": d, "max_len": max_len, **extra}
        self.num_items, self.max_len = num_items, max_len
        self.item_emb = nn.Embedding(num_items, d, padding_idx=PAD)
        nn.init.normal_(self.item_emb.weight, std=d ** -0.5)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def hidden(self, ids: torch.Tensor, seg: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:  # [B, n] -> [B, n, d]
        raise NotImplementedError

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_emb(items.long())

    def score(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """h [..., d] against items [..., n] -> [..., n] (or items [n] shared by every row)."""
        vec = self.item_vectors(items)
        return h @ vec.T if items.dim() == 1 else torch.einsum("...d,...nd->...n", h, vec)

    def last_hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The state after the most recent item (histories are left-padded, so the last column)."""
        return self.hidden(ids[:, -self.max_len:])[:, -1]

    def score_all(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] histories -> [B, num_items] next-item scores (padding and unknown included; mask them)."""
        return self.score(self.last_hidden(ids), torch.arange(self.num_items, device=ids.device))

    def forward(self, input_ids: torch.Tensor, seg: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.hidden(input_ids, seg, positions)


class SASRec(SequenceRecommender):
    """Kang & McAuley (2018): item + learned position embeddings, causal self-attention blocks."""

    arch = "sasrec"

    def __init__(self, num_items: int, d: int, max_len: int, n_layer: int = 2, n_head: int = 1,
                 dropout: float = 0.2, ffn: int | None = None) -> None:
        ffn = ffn or d
        super().__init__(num_items, d, max_len, n_layer=n_layer, n_head=n_head, dropout=dropout, ffn=ffn)
        self.pos_emb = nn.Embedding(max_len, d)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, n_head, ffn, dropout) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d)
        self.scale = math.sqrt(d)

    def hidden(self, ids: torch.Tensor, seg: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        ids = ids.long()
        seg = segments(ids, seg)
        pos = right_aligned_positions(ids, self.max_len) if positions is None else positions.long()
        keep = (seg != 0).unsqueeze(-1)
        x = self.drop(self.item_emb(ids) * self.scale + self.pos_emb(pos)) * keep
        n = ids.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
        same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
        # A position sees earlier items of its own user only; the diagonal stays open so a padding
        # row never attends to nothing (softmax over an empty set is NaN).
        mask = (causal & same) | torch.eye(n, dtype=torch.bool, device=ids.device)
        mask = mask.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask) * keep
        return self.ln(x)


class GRU4Rec(SequenceRecommender):
    """Hidasi et al. (2016), trained like SASRec (next item at every position, same loss). The state
    starts from zero at each user's first item (packed rows and padding included)."""

    arch = "gru4rec"

    def __init__(self, num_items: int, d: int, max_len: int, n_layer: int = 1, dropout: float = 0.2) -> None:
        super().__init__(num_items, d, max_len, n_layer=n_layer, dropout=dropout)
        self.drop = Dropout(dropout)
        self.cells = nn.ModuleList(nn.GRUCell(d, d) for _ in range(n_layer))
        self.out = nn.Linear(d, d)

    def hidden(self, ids: torch.Tensor, seg: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        ids = ids.long()
        seg = segments(ids, seg)
        prev = torch.cat([torch.zeros_like(seg[:, :1]), seg[:, :-1]], 1)
        fresh = ((seg != prev) | (seg == 0)).unsqueeze(-1)  # reset before a user's first item
        x = self.drop(self.item_emb(ids))
        states = [x.new_zeros(x.shape[0], x.shape[2]) for _ in self.cells]
        outs = []
        for t in range(ids.shape[1]):
            inp = x[:, t]
            for i, cell in enumerate(self.cells):
                states[i] = cell(inp, states[i].masked_fill(fresh[:, t], 0.0))
                inp = states[i]
            outs.append(inp)
        h = torch.stack(outs, 1) * (seg != 0).unsqueeze(-1)
        return self.out(self.drop(h))


class Popularity(SequenceRecommender):
    """Training-split counts, whatever the history. One trained scalar (a temperature) lets the shared
    loss and trainer run on it without changing its ranking."""

    arch = "popularity"

    def __init__(self, num_items: int, d: int = 1, max_len: int = 1, counts: list[int] | None = None) -> None:
        super().__init__(num_items, 1, max_len)
        self.item_emb.weight.requires_grad_(False)
        self.temperature = nn.Parameter(torch.ones(()))
        c = torch.tensor(counts if counts is not None else [0] * num_items, dtype=torch.float32)
        # A fixed pseudo-random half-count tie-break: a proper ranking without favouring low ids.
        tie = torch.randperm(num_items, generator=torch.Generator().manual_seed(0)).float() / (2 * num_items)
        self.register_buffer("log_pop", torch.log1p(c + tie))

    def hidden(self, ids: torch.Tensor, seg: torch.Tensor | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        return self.temperature.expand(*ids.shape, 1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.log_pop[items.long()].unsqueeze(-1)


def build(config: dict[str, Any], counts: list[int] | None = None) -> SequenceRecommender:
    """A model from its config (as written to recommend_config.json)."""
    cfg = {k: v for k, v in config.items() if k != "arch"}
    arch = config["arch"]
    if arch == "sasrec":
        return SASRec(**cfg)
    if arch == "gru4rec":
        return GRU4Rec(**cfg)
    if arch == "popularity":
        return Popularity(cfg["num_items"], max_len=cfg["max_len"], counts=counts)
    raise ValueError(f"recommend.arch: unknown model {arch!r}")


def save(model: SequenceRecommender, out_dir: str) -> None:
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out_dir, WEIGHTS_FILE))
    with open(os.path.join(out_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(model.config, f, indent=2)


def load(model_dir: str) -> SequenceRecommender:
    from safetensors.torch import load_file

    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: not an exported recommend model")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    model = build(config)
    model.load_state_dict(load_file(os.path.join(model_dir, WEIGHTS_FILE)))
    return model.eval()
