"""Integration: real HTTP to a running Serve app on localhost (OpenAI client, malformed input,
auth, feedback across a replica restart, a version swap under load)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

pytestmark = pytest.mark.usefixtures("ray_cluster")
from builders import free_port, make_tiny_lm  # noqa: E402

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ray import serve

    from lmstack.api.settings import ServeSettings
    from lmstack.serve.app import deploy

    tmp = tmp_path_factory.mktemp("serve")
    v1, v2 = make_tiny_lm(tmp / "v1", 0), make_tiny_lm(tmp / "v2", 1)
    settings = ServeSettings.model_validate({
        "models": [{"name": "tiny", "path": v1, "version": "v1", "num_cpus": 0.5,
                    "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.01}}],
        "api_key": KEY, "feedback_dir": str(tmp / "feedback"),
        "limits": {"max_body_bytes": 65536, "max_prompt_chars": 2000, "max_tokens": 64},
    })
    port = free_port()
    deploy(settings, port=port)
    yield {"base": f"http://127.0.0.1:{port}", "settings": settings, "v2": v2, "tmp": tmp}
    serve.shutdown()


def post(base: str, path: str, body, headers=AUTH, **kw) -> requests.Response:
    if isinstance(body, (dict, list)):
        return requests.post(base + path, json=body, headers=headers, timeout=60, **kw)
    return requests.post(base + path, data=body, headers={**headers, "Content-Type": "application/json"},
                         timeout=60, **kw)


def test_openai_client_completes_and_streams(served):
    from openai import OpenAI

    client = OpenAI(base_url=served["base"] + "/v1", api_key=KEY)
    assert [m.id for m in client.models.list().data] == ["tiny"]

    out = client.completions.create(model="tiny", prompt="hello", max_tokens=12, temperature=0.8, top_p=0.9)
    assert out.object == "text_completion" and out.choices[0].finish_reason in ("length", "stop")
    assert 0 < out.usage.completion_tokens <= 12 and out.usage.prompt_tokens == 5

    # Greedy decoding is deterministic: the streamed text equals the non-streamed one.
    greedy = client.completions.create(model="tiny", prompt="the ", max_tokens=16, temperature=0).choices[0].text
    chunks = list(client.completions.create(model="tiny", prompt="the ", max_tokens=16, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == greedy
    assert chunks[-1].choices[0].finish_reason is not None

    # stop cuts before the first occurrence, streamed or not.
    stop = greedy[len(greedy) // 2]
    cut = greedy[:greedy.index(stop)]
    assert client.completions.create(model="tiny", prompt="the ", max_tokens=16, temperature=0,
                                     stop=[stop]).choices[0].text == cut
    streamed = client.completions.create(model="tiny", prompt="the ", max_tokens=16, temperature=0, stop=stop,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == cut

    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    chat = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant"
    deltas = list(client.chat.completions.create(model="tiny", messages=msgs, max_tokens=8, temperature=0,
                                                 stream=True))
    assert "".join(d.choices[0].delta.content or "" for d in deltas) == chat.choices[0].message.content

    health = requests.get(served["base"] + "/healthz", timeout=30).json()
    assert health == {"status": "ok", "models": {"tiny": "v1"}, "unavailable": []}
    metrics = requests.get(served["base"] + "/metrics", timeout=30).text
    assert 'lmstack_http_requests_total{route="/v1/completions",status="200"}' in metrics


def test_api_key_required(served):
    base = served["base"]
    body = {"model": "tiny", "prompt": "x", "max_tokens": 1}
    assert post(base, "/v1/completions", body, headers={}).status_code == 401
    assert post(base, "/v1/completions", body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert requests.get(base + "/v1/models", timeout=30).status_code == 401
    assert requests.get(base + "/healthz", timeout=30).status_code == 200


MALFORMED = [
    "{not json", "", "[]", "null", "42", '"prompt"', '{"model": "tiny"}', '{"prompt": "x"}',
    {"model": "tiny", "prompt": 5}, {"model": "tiny", "prompt": None}, {"model": "nope", "prompt": "x"},
    {"model": "", "prompt": "x"}, {"model": "tiny", "prompt": "x", "max_tokens": 0},
    {"model": "tiny", "prompt": "x", "max_tokens": 65}, {"model": "tiny", "prompt": "x", "max_tokens": "many"},
    {"model": "tiny", "prompt": "x", "temperature": -1}, {"model": "tiny", "prompt": "x", "temperature": 3},
    {"model": "tiny", "prompt": "x", "top_p": 0}, {"model": "tiny", "prompt": "x", "top_p": 1.5},
    {"model": "tiny", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, {"model": "tiny", "prompt": "x", "stop": [""]},
    {"model": "tiny", "prompt": "x", "n": 2}, {"model": "tiny", "prompt": ["a", "b"]},
    {"model": "tiny", "prompt": "x" * 2001}, {"model": "tiny", "prompt": "x", "stream": "sometimes"},
    {"model": "tiny", "prompt": "x", "seed": -1}, {"model": ["tiny"], "prompt": "x"},
]
MALFORMED_CHAT = [
    {"model": "tiny"}, {"model": "tiny", "messages": []}, {"model": "tiny", "messages": "hi"},
    {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]},
    {"model": "tiny", "messages": [{"role": "user"}]}, {"model": "tiny", "messages": [{"content": "hi"}]},
    {"model": "tiny", "messages": [{"role": "user", "content": "x" * 2001}]},
    {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
]
MALFORMED_FEEDBACK = [
    {}, {"request_id": "cmpl-unknown", "rating": 5}, {"request_id": "x"}, {"request_id": "x", "rating": 9},
    {"request_id": "", "rating": 1}, {"request_id": "x", "rating": "good"}, {"request_id": "x", "extra": 1},
]


def test_malformed_requests_get_4xx_and_app_still_answers(served):
    base = served["base"]
    cases = [("/v1/completions", b) for b in MALFORMED] + [("/v1/chat/completions", b) for b in MALFORMED_CHAT]
    cases += [("/v1/feedback", b) for b in MALFORMED_FEEDBACK]
    cases += [("/v1/completions", "x" * 70_000), ("/v1/completions", b"\xff\xfe\x00garbage"),
              ("/v1/nothing", {"model": "tiny"})]
    cases = (cases * (200 // len(cases) + 1))[:200]

    def send(case):
        path, body = case
        r = post(base, path, body)
        return r.status_code, r.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, cases))
    bad = [(c, s) for c, (s, _) in zip(cases, results, strict=True) if not 400 <= s < 500]
    assert not bad, bad[:5]
    assert all("message" in body["error"] for _, body in results)
    assert requests.get(base + "/v1/completions", headers=AUTH, timeout=30).status_code == 405
    ok = post(base, "/v1/completions", {"model": "tiny", "prompt": "still ", "max_tokens": 4})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] is not None


def test_over_long_prompt_is_a_400_and_metrics_count_it(served):
    """OpenAI answers 400 for a prompt over the context; it used to be cut from the left silently."""
    base = served["base"]
    body = {"model": "tiny", "prompt": "x" * 125, "max_tokens": 8}  # 125 + 8 > the tiny LM's 128 positions
    for stream in (False, True):
        r = post(base, "/v1/completions", {**body, "stream": stream})
        assert r.status_code == 400, r.text
        assert "maximum context length is 128 tokens" in r.json()["error"]["message"]
    assert post(base, "/v1/completions", {**body, "prompt": "x" * 100}).status_code == 200
    metrics = requests.get(base + "/metrics", timeout=30).text
    assert 'lmstack_http_requests_total{route="/v1/completions",status="400"}' in metrics


def _ingress_replicas():
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and "#ingress#" in a["name"]]


def test_feedback_persists_across_replica_restart(served, tmp_path):
    import ray

    from lmstack.cli import main
    from lmstack.config import validate_recipe

    base = served["base"]
    first = post(base, "/v1/completions", {"model": "tiny", "prompt": "to be ", "max_tokens": 6}).json()
    r = post(base, "/v1/feedback", {"request_id": first["id"], "rating": 1, "correction": "or not to be"})
    assert r.status_code == 201

    [replica] = _ingress_replicas()
    ray.kill(ray.get_actor(replica["name"], namespace="serve"), no_restart=True)
    deadline = time.time() + 90
    while time.time() < deadline:  # Serve's controller replaces the dead replica
        names = [a["name"] for a in _ingress_replicas()]
        if names and names != [replica["name"]]:
            try:
                if requests.get(base + "/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
        time.sleep(0.5)
    else:
        pytest.fail("the ingress replica did not come back")

    second = post(base, "/v1/chat/completions",
                  {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).json()
    assert post(base, "/v1/feedback", {"request_id": second["id"], "rating": 5}).status_code == 201
    assert post(base, "/v1/feedback", {"request_id": first["id"], "comment": "again"}).status_code == 201

    out = tmp_path / "feedback.jsonl"
    assert main(["feedback", "export", "--feedback-dir", served["settings"].feedback_dir, "-o", str(out)]) == 0
    rows = {r["request_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {first["id"], second["id"]}
    assert rows[first["id"]]["text"] == "to be or not to be" and rows[first["id"]]["feedback_count"] == 2
    assert rows[second["id"]]["rating"] == 5 and rows[second["id"]]["endpoint"] == "chat/completions"

    parquet = tmp_path / "feedback.parquet"
    assert main(["feedback", "export", "--feedback-dir", served["settings"].feedback_dir, "-o", str(parquet),
                 "--min-rating", "4"]) == 0
    import pyarrow.parquet as pq

    assert pq.read_table(parquet).num_rows == 2  # the correction is kept despite its rating of 1
    recipe = validate_recipe({"name": "fb", "data": {"paths": [str(out)], "format": "jsonl", "text_field": "text"},
                              "tokenizer": {"kind": "char"}}, "test")
    assert recipe.data.text_field == "text"


def test_version_swap_under_load_drops_nothing(served):
    from lmstack.serve.app import swap_model

    base, stop = served["base"], threading.Event()
    results: list[tuple[int, str, float]] = []

    def client():
        while not stop.is_set():
            try:
                r = post(base, "/v1/completions", {"model": "tiny", "prompt": "swap ", "max_tokens": 8})
                results.append((r.status_code, r.headers.get("x-lmstack-model-version", ""), time.time()))
            except requests.RequestException as err:
                results.append((0, repr(err), time.time()))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    swap_model(served["settings"], "tiny", served["v2"], "v2")
    deadline = time.time() + 60
    while time.time() < deadline and sum(v == "v2" for _, v, _ in results[-8:]) < 8:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(60)
    statuses = [s for s, _, _ in results]
    versions = [v for _, v, _ in results]
    assert statuses and all(s == 200 for s in statuses), [r for r in results if r[0] != 200][:5]
    assert versions[0] == "v1" and versions[-1] == "v2"
    first_v2 = versions.index("v2")
    assert "v1" not in versions[first_v2 + 8:]  # once swapped (allowing in-flight stragglers), stays swapped
    assert requests.get(base + "/healthz", timeout=30).json()["models"] == {"tiny": "v2"}
