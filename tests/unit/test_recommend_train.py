"""In-process training on a planted pattern (item i is followed by item i+1): SASRec and GRU4Rec learn it
and beat popularity; the exported model's predict and evaluate_file agree with a direct computation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lmstack.config import validate_recipe
from lmstack.tasks import get_spec
from lmstack.tasks.recommend.metrics import FIRST_ITEM, hits_and_ndcg, sampled_rank
from lmstack.tasks.recommend.predict import Recommender, evaluate_file, predict
from lmstack.tasks.recommend.prepare import _Encode, vocabulary
from lmstack.tasks.recommend.spec import candidate_scores

N_ITEMS, MAX_LEN, NEGATIVES = 60, 10, 20


def planted(n_users: int = 300, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    seqs = {}
    for u in range(n_users):
        start = rng.randrange(N_ITEMS)
        seqs[f"u{u}"] = [f"i{(start + j) % N_ITEMS}" for j in range(rng.randint(4, 12))]
    return seqs


def prepare_in_process(tmp: Path, seqs: dict[str, list[str]]) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
    """What the Ray prepare writes, built directly: split tensors, items.json and the evaluation files."""
    counts: dict[str, list[int]] = {}
    for items in seqs.values():
        for j, item in enumerate(items):
            c = counts.setdefault(item, [0, 0])
            c[0] += 1
            c[1] += j < len(items) - 2
    vocab, train_counts = vocabulary({k: (v[0], v[1]) for k, v in counts.items()})
    index = {item: i for i, item in enumerate(vocab) if i >= FIRST_ITEM}
    out = _Encode(index, len(vocab), MAX_LEN, NEGATIVES, seed=0)(
        {"user": np.array(list(seqs)), "items": np.array(list(seqs.values()), dtype=object)})
    splits = {}
    for split, cols in (("train", ("input_ids", "pos", "seg", "positions")), ("val", ("input_ids", "candidates")),
                        ("test", ("input_ids", "candidates"))):
        idx = [i for i, s in enumerate(out["split"]) if s == split]
        splits[split] = {c: torch.tensor([out[c][i] for i in idx]) for c in cols}
    data = tmp / "data"
    data.mkdir()
    (data / "items.json").write_text(json.dumps({
        "items": vocab, "counts": train_counts, "columns": {"user": "user", "item": "item", "time": None},
        "eval": {"num_negatives": NEGATIVES, "seed": 0}}))
    (data / "test_history.txt").write_text("".join(f"{u} {i}\n" for u, items in seqs.items() for i in items[:-1]))
    (data / "test_targets.txt").write_text("".join(f"{u} {items[-1]}\n" for u, items in seqs.items()))
    return splits, {"num_items": len(vocab), "max_len": MAX_LEN, "vocab": str(data / "items.json")}


def recipe(arch: str, steps: int = 150):
    return validate_recipe({
        "name": f"t_{arch}", "task": "recommend", "data": {"paths": ["unused"]},
        "model": {"n_embd": 32, "n_layer": 1, "n_head": 2, "dropout": 0.1},
        "train": {"batch_size": 16, "max_steps": steps, "lr": 5e-3, "min_lr": 5e-4, "warmup_steps": min(10, steps),
                  "weight_decay": 0.0, "eval_every": steps, "eval_batches": None, "log_every": steps},
        "recommend": {"arch": arch, "max_len": MAX_LEN, "loss": "sampled_softmax", "num_negatives": 16,
                      "eval": {"num_negatives": NEGATIVES, "seed": 0}},
    }, "test")


def val_metrics(spec, model, val) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        loss, n = spec.loss(model, val)
        counts = spec.eval_counts(model, val)
    return spec.metrics(float(loss) * n, n, {}, counts=counts)


def fit(arch: str, splits, info):
    """The generic in-process Trainer (the loop Ray Train runs per worker) on the task's spec."""
    from lmstack.train.loop import Trainer

    spec = get_spec("recommend")
    r = recipe(arch, steps=1 if arch == "popularity" else 150)
    trainer = Trainer(r, spec, info, echo=None)
    train = splits["train"]

    def epoch_batches(epoch: int):
        order = torch.randperm(len(train["pos"]), generator=torch.Generator().manual_seed(epoch))
        return [{k: v[order[s:s + 16]] for k, v in train.items()} for s in range(0, len(order) - 15, 16)]

    rows = trainer.fit(epoch_batches, lambda: [splits["val"]])
    assert rows[-1]["step"] == r.train.max_steps and "val_ndcg@10" in rows[-1]
    return spec, trainer.core.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: extra threads only spin
    tmp = tmp_path_factory.mktemp("rec")
    seqs = planted()
    splits, info = prepare_in_process(tmp, seqs)
    models = {arch: fit(arch, splits, info) for arch in ("sasrec", "gru4rec", "popularity")}
    yield tmp, seqs, splits, info, models
    torch.set_num_threads(n)


def test_sequence_models_learn_the_pattern_and_beat_popularity(trained):
    _, _, splits, _, models = trained
    got = {arch: val_metrics(spec, m, splits["val"]) for arch, (spec, m) in models.items()}
    pop = got["popularity"]
    assert pop["val_users"] == len(splits["val"]["input_ids"])
    for arch in ("sasrec", "gru4rec"):
        assert got[arch]["val_ndcg@10"] > pop["val_ndcg@10"] + 0.3, got
        assert got[arch]["val_hr@10"] > 0.9 and got[arch]["val_loss"] < pop["val_loss"], got
    # metrics() from eval_counts is HR/NDCG computed directly on the candidates' scores
    spec, m = models["sasrec"]
    with torch.no_grad():
        scores = candidate_scores(m, splits["val"])
    direct = [(1.0 / np.log2(r + 2)) if r < 10 else 0.0
              for r in ((scores[:, 1:] >= scores[:, :1]).sum(1)).tolist()]
    assert got["sasrec"]["val_ndcg@10"] == pytest.approx(np.mean(direct))


def export(tmp: Path, models, info, arch: str) -> str:
    spec, m = models[arch]
    out = tmp / f"model_{arch}"
    out.mkdir(exist_ok=True)
    spec.export(m, str(out))
    spec.export_assets(info, str(out))
    (out / "lmstack_model.json").write_text(json.dumps({"task": "recommend"}))
    return str(out)


def test_evaluate_file_reproduces_the_prepared_test_candidates(trained):
    tmp, seqs, splits, info, models = trained
    model_dir = export(tmp, models, info, "sasrec")
    data = tmp / "data"
    res = evaluate_file(model_dir, str(data / "test_history.txt"), targets=str(data / "test_targets.txt"))
    # The same negatives as prepare drew (per-user seed), so the same figures as scoring its test rows.
    _, m = models["sasrec"]
    with torch.no_grad():
        hit, ndcg = hits_and_ndcg(sampled_rank(candidate_scores(m, splits["test"])), 10)
    assert res["users"] == len(seqs) and res["fallback_users"] == 0 and res["unknown_targets"] == 0
    assert res["hr@10"] == pytest.approx(float(hit.mean()), abs=1e-6)
    assert res["ndcg@10"] == pytest.approx(float(ndcg.mean()), abs=1e-6)
    assert res["full_hr@10"] > 0.5 and 0 <= res["full_ndcg@10"] <= res["full_hr@10"]
    # A user without history is scored with the popularity fallback and counted; an unknown target is a miss.
    (tmp / "targets2.txt").write_text("stranger i5\nu0 not-an-item\n")
    res2 = evaluate_file(model_dir, str(data / "test_history.txt"), targets=str(tmp / "targets2.txt"))
    assert res2["users"] == 2 and res2["fallback_users"] == 1 and res2["unknown_targets"] == 1
    with pytest.raises(ValueError, match="--targets"):
        evaluate_file(model_dir, str(data / "test_history.txt"))


def test_recommender_excludes_seen_counts_unknown_items_and_falls_back(trained):
    tmp, _, _, info, models = trained
    model_dir = export(tmp, models, info, "sasrec")
    rec = Recommender(model_dir)
    out = rec.recommend([["i3", "i4", "nope"], ["i3", "i4"], [], ["ghost"]], k=5)
    assert out[0]["data"][0]["item"] == "i5"  # the planted pattern
    assert out[0]["unknown_items"] == 1 and not out[0]["fallback"]
    assert [d["item"] for d in out[0]["data"]] == [d["item"] for d in out[1]["data"]]
    assert all(d["item"] not in ("i3", "i4") for d in out[0]["data"]) and len(out[0]["data"]) == 5
    with_seen = rec.recommend([["i3", "i4"]], k=N_ITEMS + 5, exclude_seen=False)[0]["data"]
    assert {"i3", "i4"} <= {d["item"] for d in with_seen} and len(with_seen) == N_ITEMS
    counts = json.loads(Path(info["vocab"]).read_text())["counts"]
    items = json.loads(Path(info["vocab"]).read_text())["items"]
    top = sorted(range(FIRST_ITEM, len(items)), key=lambda i: -counts[i])[0]
    for fallback in out[2:]:
        assert fallback["fallback"] and fallback["data"][0]["score"] == counts[top]
    assert out[3]["unknown_items"] == 1
    scores = [d["score"] for d in out[0]["data"]]
    assert scores == sorted(scores, reverse=True)
    assert predict(model_dir, ["i3 i4"], k=3)[0]["data"][0]["item"] == "i5"
