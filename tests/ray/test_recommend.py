"""Recommendation on a real Ray cluster: Ray Data prepare (leave-one-out, rejects with reasons), Ray Train
through `lmstack.train.trainer.train`, the `lmstack evaluate` CLI round trip, and /v1/recommend over real
HTTP (bad requests included).

The interactions are generated with a planted pattern: each user watches consecutive items (item i is
followed by item i+1), so a tiny SASRec learns it in a few dozen steps while popularity cannot."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("ray_cluster")
ROOT = Path(__file__).resolve().parents[2]
N_ITEMS, MAX_LEN, NEGATIVES = 60, 10, 20


def make_interactions(root: Path) -> tuple[Path, dict[str, list[str]]]:
    rng = random.Random(0)
    seqs = {}
    for u in range(240):
        start = rng.randrange(N_ITEMS)
        seqs[f"u{u}"] = [f"i{(start + j) % N_ITEMS}" for j in range(rng.randint(4, 12))]
    lines = [f"{u} {i}" for u, items in seqs.items() for i in items]
    # Malformed lines and a user too short for leave-one-out: set aside with reasons, never dropped silently.
    lines[5:5] = ["just-one-field", "", "a b c d"]
    lines += ["short i1", "short i2"]
    path = root / "interactions.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, seqs


def recipe_for(tmp: Path, data: Path, arch: str = "sasrec", steps: int = 60):
    from lmstack.config import validate_recipe

    return validate_recipe({
        "name": f"rec_{arch}", "task": "recommend", "run_dir": str(tmp / f"run_{arch}"),
        "data": {"paths": [str(data)], "output": str(tmp / "data")},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.1},
        "recommend": {"arch": arch, "max_len": MAX_LEN, "num_negatives": 16,
                      "eval": {"num_negatives": NEGATIVES, "seed": 3}},
        "train": {"num_workers": 1, "in_process": True, "batch_size": 8, "max_steps": steps, "lr": 5e-3, "min_lr": 5e-4,
                  "warmup_steps": 5, "weight_decay": 0.0, "eval_every": 30, "eval_batches": None, "log_every": 10,
                  "early_stopping": {"metric": "val_ndcg@10", "patience": 3}},
    }, "test")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lmstack.tasks import get_spec

    tmp = tmp_path_factory.mktemp("recommend")
    data, seqs = make_interactions(tmp)
    recipe = recipe_for(tmp, data)
    spec = get_spec("recommend")
    manifest = spec.prepare(recipe, log=lambda *_: None)
    try:
        from lmstack.train.trainer import train
    except ImportError as err:  # the trainer is being rewritten (issue 13)
        pytest.skip(f"lmstack.train.trainer.train is not importable: {err}")
    summary = train(recipe, log=lambda *_: None)
    # The popularity baseline on the same prepared data, exported the same way (nothing to train).
    pop_dir = tmp / "popularity"
    pop_dir.mkdir()
    pop = spec.build_model(recipe_for(tmp, data, "popularity"), manifest)
    spec.export(pop, str(pop_dir))
    spec.export_assets(manifest, str(pop_dir))
    (pop_dir / "lmstack_model.json").write_text(json.dumps({"task": "recommend"}))
    return {"tmp": tmp, "seqs": seqs, "recipe": recipe, "manifest": manifest, "summary": summary,
            "model": summary["model_dir"], "popularity": str(pop_dir)}


def test_prepare_splits_leave_one_out_and_sets_rejects_aside(trained):
    import pyarrow.parquet as pq

    manifest, seqs = trained["manifest"], trained["seqs"]
    data = Path(trained["recipe"].data_dir())
    assert manifest["users"]["kept"] == len(seqs) and manifest["users"]["too_few_interactions"] == 1
    assert manifest["records"]["rejected_by_reason"] == {
        "1 fields; expected 2 (user item)": 1, "blank line": 1, "4 fields; expected 2 (user item)": 1,
        "user with fewer than 3 interactions": 1}
    rejects = [json.loads(x) for x in (data / "rejects" / "rejects.jsonl").read_text().splitlines()]
    assert {r["reason"] for r in rejects} == set(manifest["records"]["rejected_by_reason"])
    assert any(r.get("user") == "short" and r["interactions"] == 2 for r in rejects)
    assert all("line" in r for r in rejects if r.get("user") != "short")

    vocab = json.loads((data / "items.json").read_text())["items"]
    for split, back in (("test", 1), ("val", 2)):
        table = pq.read_table(data / split).to_pylist()
        assert len(table) == len(seqs)
        for row in table:
            items = seqs[row["user"]]
            assert vocab[row["target"]] == items[-back] and row["candidates"][0] == row["target"]
            history = [vocab[i] for i in row["input_ids"] if i]
            assert history == items[:-back][-MAX_LEN:]
            # Negatives avoid everything the user had seen up to and including the target.
            assert not {vocab[i] for i in row["candidates"][1:]} & set(items[:len(items) - back + 1])
    train = pq.read_table(data / "train").to_pydict()
    # Every training position predicts an item of the user's prefix before the validation target.
    positions = sum(1 for row in train["pos"] for p in row if p)
    assert positions == sum(min(len(s) - 2, MAX_LEN + 1) - 1 for s in seqs.values())
    assert manifest["examples"]["train"] < len(seqs) / 2  # packed: several users per row


def test_trained_sasrec_beats_popularity_and_evaluates_like_validation(trained):
    from lmstack.tasks import get_spec

    summary, files = trained["summary"], trained["manifest"]["eval_files"]["val"]
    spec = get_spec("recommend")
    model_files = {p.name for p in Path(trained["model"]).iterdir()}
    assert {"model.safetensors", "recommend_config.json", "items.json", "lmstack_model.json"} <= model_files
    sasrec = spec.evaluate_file(trained["model"], files["history"], targets=files["targets"])
    pop = spec.evaluate_file(trained["popularity"], files["history"], targets=files["targets"])
    assert sasrec["ndcg@10"] > pop["ndcg@10"] + 0.3 and sasrec["hr@10"] > pop["hr@10"]
    assert sasrec["full_ndcg@10"] > pop["full_ndcg@10"]
    # The trainer's validation metric (per-batch sums from eval_counts) is the evaluate verb's figure on
    # the same users: the same histories, the same seeded negatives.
    assert sasrec["users"] == summary["val_users"] == len(trained["seqs"])
    assert sasrec["ndcg@10"] == pytest.approx(summary["val_ndcg@10"], abs=1e-5)
    assert sasrec["hr@10"] == pytest.approx(summary["val_hr@10"], abs=1e-5)


def test_evaluate_cli_round_trip(trained):
    from lmstack.tasks import get_spec

    files = trained["manifest"]["eval_files"]["test"]
    cli = ROOT / ".venv" / "bin" / "lmstack"
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "lmstack"]
    # `--targets=PATH`: with a space, the CLI's evaluate parser (optional positional recipe) takes the
    # path as its recipe before the task's own options are parsed (reported to the lead).
    done = subprocess.run([*cmd, "evaluate", "--model", trained["model"], "--data", files["history"],
                           f"--targets={files['targets']}"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LMSTACK_PROGRESS": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    direct = get_spec("recommend").evaluate_file(trained["model"], files["history"], targets=files["targets"])
    assert printed["users"] == direct["users"] == len(trained["seqs"]) and printed["fallback_users"] == 0
    for key in ("hr@10", "ndcg@10", "full_hr@10", "full_ndcg@10"):
        assert printed[key] == pytest.approx(direct[key])
    assert printed["seed"] == 3 and printed["num_negatives"] == NEGATIVES  # the model's own protocol


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(trained):
    from ray import serve

    from lmstack.serve.app import deploy

    port = free_port()
    deploy({"models": [{"name": "shows", "path": trained["model"], "version": "v1", "num_cpus": 0.5,
                        "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}}],
            "feedback_dir": str(trained["tmp"] / "feedback")}, port=port)
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_recommend_over_http_matches_predict_batches_and_takes_feedback(trained, served):
    import requests

    from lmstack.tasks import get_spec

    expected = get_spec("recommend").predict(trained["model"], ["i3 i4 i5"], k=5)[0]
    r = requests.post(f"{served}/v1/recommend", json={"model": "shows", "history": ["i3", "i4", "i5", "zzz"],
                                                      "k": 5}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "recommendation" and body["model"] == "shows" and body["version"] == "v1"
    assert [d["item"] for d in body["data"]] == [d["item"] for d in expected["data"]]
    assert body["data"][0]["item"] == "i6"  # the planted pattern
    assert body["unknown_items"] == 1 and body["fallback"] is False
    assert not {"i3", "i4", "i5"} & {d["item"] for d in body["data"]}

    seen = requests.post(f"{served}/v1/recommend", json={"model": "shows", "history": ["i3"], "k": 60,
                                                         "exclude_seen": False}, timeout=60).json()
    assert "i3" in {d["item"] for d in seen["data"]} and len(seen["data"]) == N_ITEMS
    cold = requests.post(f"{served}/v1/recommend", json={"model": "shows", "history": ["nobody-knows"]},
                         timeout=60).json()
    assert cold["fallback"] is True and cold["unknown_items"] == 1 and len(cold["data"]) == 10

    def one(i: int) -> list[str]:
        history = [f"i{i % 50}", f"i{i % 50 + 1}"]
        res = requests.post(f"{served}/v1/recommend", json={"model": "shows", "history": history, "k": 3},
                            timeout=60).json()
        return [d["item"] for d in res["data"]]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(32)))
    direct = get_spec("recommend").predict(trained["model"], [f"i{i % 50} i{i % 50 + 1}" for i in range(32)], k=3)
    assert answers == [[d["item"] for d in e["data"]] for e in direct]

    fb = requests.post(f"{served}/v1/feedback", json={"request_id": body["id"], "rating": 5,
                                                      "comment": "clicked i6"}, timeout=30)
    assert fb.status_code == 201, fb.text
    assert requests.post(f"{served}/v1/feedback", json={"request_id": "rec-nope", "rating": 1},
                         timeout=30).status_code == 404


@pytest.mark.parametrize("body, status, param", [
    ({"model": "shows", "history": []}, 400, "history"),
    ({"model": "shows", "history": ["i1"] * 1001}, 413, "history"),
    ({"model": "shows", "history": ["i1"], "k": 0}, 400, "k"),
    ({"model": "shows", "history": ["i1"], "k": 101}, 400, "k"),
    ({"model": "shows", "history": [""]}, 400, "history"),
    ({"model": "shows", "history": "i1 i2"}, 400, "history"),
    ({"model": "shows", "history": [1.5]}, 400, None),
    ({"model": "shows"}, 400, "history"),
    ({"model": "nope", "history": ["i1"]}, 404, "model"),
])
def test_bad_recommend_requests_get_4xx(served, body, status, param):
    import requests

    r = requests.post(f"{served}/v1/recommend", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"]
    if param is not None:
        assert error["param"].startswith(param)
