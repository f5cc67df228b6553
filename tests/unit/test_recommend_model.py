"""Recommend models without Ray: shapes, losses, packing, export round trip, the Recommender."""

from __future__ import annotations

import json
import random

import pytest
import torch

from lmstack.tasks.recommend.metrics import FIRST_ITEM, PAD
from lmstack.tasks.recommend.model import build, load, save
from lmstack.tasks.recommend.prepare import left_pad, pack
from lmstack.tasks.recommend.spec import candidate_scores, train_loss

V, L = 40, 8
ARCHS = {"sasrec": {"n_layer": 2, "n_head": 2, "dropout": 0.2}, "gru4rec": {"n_layer": 2, "dropout": 0.2},
         "popularity": {}}


def model(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return build({"arch": arch, "num_items": V, "d": 16, "max_len": L, **ARCHS[arch]},
                 counts=list(range(V)) if arch == "popularity" else None)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Two shared cores: more torch threads than cores spin-wait and slow a tiny model down many times.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def packed_batch(n_users: int = 30, seed: int = 0) -> dict[str, torch.Tensor]:
    """Users whose next item is always the item after the current one (a pattern a model can learn)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n_users):
        start = rng.randrange(V)
        s = [FIRST_ITEM + (start + j) % (V - FIRST_ITEM) for j in range(rng.randint(2, L + 1))]
        pairs.append((s[:-1], s[1:]))
    rows = pack(pairs, L)
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("kind", ["bce", "sampled_softmax"])
def test_forward_and_loss_shapes(arch, kind):
    m = model(arch)
    batch = packed_batch()
    h = m(batch["input_ids"], batch["seg"], batch["positions"])
    assert h.shape[:2] == batch["input_ids"].shape
    assert m.score_all(batch["input_ids"]).shape == (len(batch["input_ids"]), V)
    loss, n = train_loss(m, batch, kind, 5)
    assert loss.dim() == 0 and torch.isfinite(loss) and n == int((batch["pos"] != PAD).sum())
    cands = torch.randint(FIRST_ITEM, V, (4, 11))
    scores = candidate_scores(m, {"input_ids": batch["input_ids"][:4], "candidates": cands})
    assert scores.shape == (4, 11)


@pytest.mark.parametrize("arch", ["sasrec", "gru4rec"])
def test_packed_rows_give_each_user_the_states_it_gets_alone(arch):
    m = model(arch).eval()
    rng = random.Random(3)
    pairs = [([rng.randrange(FIRST_ITEM, V) for _ in range(rng.randint(1, L))], []) for _ in range(12)]
    pairs = [(p, p) for p, _ in pairs]
    rows = pack(pairs, L)
    batch = {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}
    with torch.no_grad():
        packed = m(batch["input_ids"], batch["seg"], batch["positions"])
        for r, row in enumerate(rows):
            for k in set(row["seg"]) - {0}:
                idx = [i for i, s in enumerate(row["seg"]) if s == k]
                alone = m(torch.tensor([left_pad([row["input_ids"][i] for i in idx], L)]))[0, -len(idx):]
                torch.testing.assert_close(packed[r, idx], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["sasrec", "gru4rec"])
@pytest.mark.parametrize("kind", ["bce", "sampled_softmax"])
def test_a_few_optimizer_steps_reduce_the_loss(arch, kind):
    m = model(arch)
    batch = packed_batch(seed=1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    torch.manual_seed(0)

    def measured() -> float:  # the same negatives each time, so only the model changes
        torch.manual_seed(123)
        with torch.no_grad():
            m.eval()
            out = float(train_loss(m, batch, kind, 8)[0])
            m.train()
        return out

    before = measured()
    for _ in range(60):
        loss, _ = train_loss(m, batch, kind, 8)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert measured() < 0.7 * before


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_export_round_trip_is_safetensors_and_scores_the_same(arch, tmp_path):
    m = model(arch).eval()
    save(m, str(tmp_path))
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "recommend_config.json").read_text())["arch"] == arch
    again = load(str(tmp_path))
    ids = torch.tensor([left_pad([3, 4, 5], L), left_pad([7], L)])
    with torch.no_grad():
        torch.testing.assert_close(again.score_all(ids), m.score_all(ids))


def test_popularity_ranks_by_training_counts_whatever_the_history():
    m = model("popularity").eval()
    a = m.score_all(torch.tensor([left_pad([3, 4], L)]))
    b = m.score_all(torch.tensor([left_pad([9], L)]))
    torch.testing.assert_close(a, b)
    assert a[0, FIRST_ITEM:].argsort(descending=True)[:3].tolist() == [V - 1 - FIRST_ITEM, V - 2 - FIRST_ITEM,
                                                                        V - 3 - FIRST_ITEM]
