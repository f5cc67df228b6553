"""HR@k and NDCG@k: the SASRec protocol (the target among sampled items the user never interacted with)
and full ranking over every item.

Ties count against the target (rank = items scoring strictly higher + tied items), so a model that
scores everything alike gets no credit. Item ids: 0 is padding, 1 the unknown item, 2.. real items.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import torch

PAD, UNK, FIRST_ITEM = 0, 1, 2


def user_rng(user: str, seed: int) -> np.random.Generator:
    """One stream per (seed, user): prepare and `lmstack evaluate` draw the same negatives for a user
    whatever order users come in."""
    return np.random.default_rng([seed, zlib.crc32(user.encode("utf-8"))])


def sample_negatives(user: str, rated: Iterable[int], num_items: int, n: int, seed: int) -> list[int]:
    """`n` distinct item ids in [2, num_items) that are not in `rated`, uniformly, with a fixed seed."""
    rated = set(rated)
    available = num_items - FIRST_ITEM - len({r for r in rated if r >= FIRST_ITEM})
    if available < n:
        raise ValueError(f"user {user!r}: only {available} items they never interacted with; "
                         f"recommend.eval.num_negatives is {n}")
    rng = user_rng(user, seed)
    out: list[int] = []
    seen = set(rated)
    while len(out) < n:
        for item in rng.integers(FIRST_ITEM, num_items, size=2 * (n - len(out)) + 8).tolist():
            if item not in seen:
                seen.add(item)
                out.append(item)
                if len(out) == n:
                    break
    return out


def target_rank(scores: torch.Tensor, target_scores: torch.Tensor, valid: torch.Tensor | None = None
                ) -> torch.Tensor:
    """0-based rank of each row's target: the other items scoring at least as high (`valid` masks
    out items that do not compete, e.g. padding or the user's history)."""
    ge = scores >= target_scores.unsqueeze(-1)
    if valid is not None:
        ge = ge & valid
    return ge.sum(-1) - 1  # the target itself is counted once


def hits_and_ndcg(rank: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: 1 if the target is in the top k, and its NDCG@k (one relevant item: 1/log2(rank + 2))."""
    hit = (rank < k).to(torch.float64)
    ndcg = hit / torch.log2(rank.to(torch.float64) + 2.0)
    return hit, ndcg


def sampled_rank(candidate_scores: torch.Tensor) -> torch.Tensor:
    """Rank of column 0 (the target) among the candidates' scores [B, 1 + n]."""
    return target_rank(candidate_scores, candidate_scores[:, 0])


def full_rank(all_scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
    """Rank of each target among every real item [B, V]; items in `history` [B, L] (padded with 0) do
    not compete, except the target itself (RecBole's convention for full-sort evaluation)."""
    valid = torch.ones_like(all_scores, dtype=torch.bool)
    valid[:, :FIRST_ITEM] = False
    if history is not None:
        valid.scatter_(1, history.long(), False)
    valid.scatter_(1, targets.long().unsqueeze(1), True)
    target_scores = all_scores.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    return target_rank(all_scores, target_scores, valid)


def summarize(counts: np.ndarray, k: int, prefix: str = "") -> dict[str, float]:
    """[hits, ndcg_sum, users] summed over batches -> the averaged figures."""
    hits, ndcg, users = (float(x) for x in counts[:3])
    n = max(users, 1.0)
    return {f"{prefix}hr@{k}": hits / n, f"{prefix}ndcg@{k}": ndcg / n, f"{prefix}users": users}
