"""/v1/classify over real HTTP: the served labels and scores are exactly the classify task's predict()."""

from __future__ import annotations

import json
import socket
import string
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.usefixtures("ray_cluster")
LABELS = ["ci", "qu", "shi"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tiny_classifier(out) -> str:
    """A 1-layer GPT-2 sequence classifier on the char tokenizer, exported as a classify model dir."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from lmstack.data.tokenizer import char_tokenizer

    torch.manual_seed(0)
    tok = char_tokenizer(string.printable)
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=eos,
                     eos_token_id=eos, pad_token_id=eos, num_labels=len(LABELS),
                     id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    GPT2ForSequenceClassification(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    (out / "lmstack_model.json").write_text(json.dumps({"task": "classify", "strategy": "full"}))
    return str(out)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ray import serve

    from lmstack.serve.app import deploy

    tmp = tmp_path_factory.mktemp("serve_classify")
    model = make_tiny_classifier(tmp / "clf")
    port = free_port()
    deploy({"models": [{"name": "form", "path": model, "version": "v1", "num_cpus": 0.5}],
            "feedback_dir": str(tmp / "feedback"), "limits": {"max_prompt_chars": 200}}, port=port)
    yield f"http://127.0.0.1:{port}", model
    serve.shutdown()


def test_classify_matches_the_task_predict_and_batches_concurrent_requests(served):
    from lmstack.tasks import get_spec

    base, model = served
    texts = ["the moon over the river", "spring wind", "a cold night, a lone boat, snow"]
    expected = get_spec("classify").predict(model, texts)
    r = requests.post(f"{base}/v1/classify", json={"model": "form", "input": texts}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "classification" and body["version"] == "v1" and len(body["data"]) == 3
    for got, want in zip(body["data"], expected, strict=True):
        assert got["label"] == want["label"] and set(got["scores"]) == set(LABELS)
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)

    def one(text):
        return requests.post(f"{base}/v1/classify", json={"model": "form", "input": text}, timeout=60).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, texts * 8))
    assert [a["data"][0]["label"] for a in answers] == [e["label"] for e in expected] * 8

    models = requests.get(f"{base}/v1/models", timeout=30).json()["data"]
    assert [(m["id"], m["task"]) for m in models] == [("form", "classify")]
    fb = requests.post(f"{base}/v1/feedback", json={"request_id": body["id"], "correction": "ci"}, timeout=30)
    assert fb.status_code == 201, fb.text


@pytest.mark.parametrize("body, status", [
    ({"model": "form", "input": []}, 400),
    ({"model": "form", "input": ""}, 400),
    ({"model": "form", "input": "x" * 201}, 400),
    ({"model": "form", "input": ["ok"] * 257}, 400),
    ({"model": "nope", "input": "text"}, 404),
    ({"model": "form"}, 400),
    ({"input": "text"}, 400),
])
def test_bad_classify_requests_get_4xx(served, body, status):
    base, _ = served
    r = requests.post(f"{base}/v1/classify", json=body, timeout=30)
    assert r.status_code == status, r.text
    assert "error" in r.json()
