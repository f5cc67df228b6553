"""HR@k / NDCG@k and the sampled negatives, checked against a direct computation (no Ray)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from lmstack.tasks.recommend import metrics as M


def direct(target_score: float, others: list[float], k: int) -> tuple[float, float]:
    """The textbook definition: rank = others scoring at least as high (ties count against the target)."""
    rank = sum(1 for s in others if s >= target_score)
    return (1.0, 1.0 / math.log2(rank + 2)) if rank < k else (0.0, 0.0)


def test_sampled_hr_and_ndcg_match_a_direct_computation():
    rng = random.Random(0)
    rows = []
    for _ in range(300):  # targets near the top, with some exact ties to the target
        target = rng.random() ** 0.05
        rows.append([target, *(target if rng.random() < 0.02 else rng.random() for _ in range(100))])
    rank = M.sampled_rank(torch.tensor(rows))
    hit, ndcg = M.hits_and_ndcg(rank, 10)
    want = [direct(r[0], r[1:], 10) for r in rows]
    assert hit.tolist() == [w[0] for w in want]
    assert ndcg.tolist() == pytest.approx([w[1] for w in want])
    assert 0 < hit.mean() < 1  # the data exercise both outcomes

    counts = np.array([float(hit.sum()), float(ndcg.sum()), len(rows)])
    got = M.summarize(counts, 10, prefix="val_")
    assert got["val_hr@10"] == pytest.approx(np.mean([w[0] for w in want]))
    assert got["val_ndcg@10"] == pytest.approx(np.mean([w[1] for w in want]))
    assert got["val_users"] == 300


def test_equal_scores_earn_nothing():
    hit, ndcg = M.hits_and_ndcg(M.sampled_rank(torch.zeros(4, 101)), 10)
    assert hit.sum() == 0 and ndcg.sum() == 0


def test_full_rank_excludes_the_history_but_never_the_target():
    rng = np.random.default_rng(1)
    scores = torch.tensor(rng.normal(size=(50, 30)), dtype=torch.float32)
    history = torch.zeros(50, 6, dtype=torch.long)
    targets = torch.tensor(rng.integers(M.FIRST_ITEM, 30, size=50))
    for r in range(50):
        h = rng.choice(np.arange(M.FIRST_ITEM, 30), size=rng.integers(0, 6), replace=False)
        history[r, : len(h)] = torch.tensor(h)
        if r % 5 == 0:
            history[r, 0] = targets[r]  # a repeated item: the target stays ranked
    rank = M.full_rank(scores, targets, history)
    for r in range(50):
        seen = set(history[r].tolist()) - {M.PAD}
        t = int(targets[r])
        others = [float(scores[r, i]) for i in range(M.FIRST_ITEM, 30) if i != t and i not in seen]
        assert int(rank[r]) == sum(1 for s in others if s >= float(scores[r, t]))


def test_sampled_negatives_are_distinct_unrated_seeded_and_per_user():
    rated = [2, 3, 5, 8]
    a = M.sample_negatives("alice", rated, 200, 100, seed=7)
    assert len(a) == len(set(a)) == 100
    assert not set(a) & set(rated) and all(M.FIRST_ITEM <= i < 200 for i in a)
    assert a == M.sample_negatives("alice", list(reversed(rated)), 200, 100, seed=7)  # order-free, repeatable
    assert a != M.sample_negatives("bob", rated, 200, 100, seed=7)
    assert a != M.sample_negatives("alice", rated, 200, 100, seed=8)
    # every unrated item is reachable: drawing all of them returns exactly that set
    assert sorted(M.sample_negatives("alice", rated, 20, 14, seed=0)) == sorted(set(range(2, 20)) - set(rated))
    with pytest.raises(ValueError, match="num_negatives"):
        M.sample_negatives("alice", rated, 20, 15, seed=0)
