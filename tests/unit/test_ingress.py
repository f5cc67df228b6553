"""The ingress's cross-cutting rules, on its FastAPI app driven in-process (no Serve, no Ray): the API key
checked by digest, backend failures counted as 500s in /metrics, a full model queue answered 503, an
over-long prompt a 400; open binds refused; the key never in the deployment's arguments."""

import asyncio
import hashlib
import json

import pytest
from ray.serve.exceptions import BackPressureError

from lmstack.api.settings import ServeSettings
from lmstack.serve.app import InsecureBindError, check_bind, ingress_args
from lmstack.serve.feedback import FeedbackStore
from lmstack.serve.ingress import Ingress

KEY = "s3cret-key"


class _Method:
    def __init__(self, fn):
        self.fn = fn

    async def remote(self, *args):
        return self.fn(*args)


class FakeModel:
    """A model handle whose `complete` does what the test says (return, or raise as a replica would)."""

    def __init__(self, complete):
        self.complete = _Method(complete)
        self.info = _Method(lambda: {"version": "1"})


def _app(tmp_path, complete, **settings):
    raw = {"models": [{"name": "tiny", "path": "", "task": "lm"}], "feedback_dir": str(tmp_path), **settings}
    base = Ingress.__mro__[1]  # the class under @serve.ingress
    ingress = base.__new__(base)
    base.__init__(ingress, ServeSettings.model_validate(raw).model_dump(), {"tiny": FakeModel(complete)},
                  {"tiny": "lm"})
    return ingress.__serve_build_asgi_app__()


def call(app, method, path, body=None, key=None):
    data = json.dumps(body).encode() if body is not None else b""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "headers": headers, "server": ("test", 80),
             "client": ("127.0.0.1", 1), "scheme": "http", "root_path": ""}
    inbox = [{"type": "http.request", "body": data, "more_body": False}]
    out = {"body": b""}

    async def receive():
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], dict(message["headers"])
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out


BODY = {"model": "tiny", "prompt": "hello", "max_tokens": 4}


def _raise(err):
    def fail(*_):
        raise err
    return fail


def test_the_key_is_checked_by_digest_and_never_bound_in_plain(tmp_path, monkeypatch):
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    app = _app(tmp_path, lambda *_: None, api_key_sha256=digest)
    assert call(app, "GET", "/v1/models")["status"] == 401
    assert call(app, "GET", "/v1/models", key="wrong")["status"] == 401
    assert call(app, "GET", "/v1/models", key=KEY)["status"] == 200
    assert call(app, "GET", "/healthz")["status"] == 200
    # A key only in the driver's environment reaches every replica as its digest; the key itself is not
    # among the deployment's arguments (Serve's config and dashboard show those).
    monkeypatch.setenv("LMSTACK_API_KEY", KEY)
    args = ingress_args(ServeSettings.model_validate({"models": [{"name": "tiny", "path": "p"}]}))
    assert args["api_key_sha256"] == digest and KEY not in json.dumps(args)


def test_backend_failures_are_counted_500s_and_overload_is_503(tmp_path):
    app = _app(tmp_path, _raise(RuntimeError("replica died")))
    r = call(app, "POST", "/v1/completions", BODY)
    assert r["status"] == 500 and json.loads(r["body"])["error"]["type"] == "server_error"
    metrics = call(app, "GET", "/metrics")["body"].decode()
    assert 'lmstack_http_requests_total{route="/v1/completions",status="500"} 1.0' in metrics

    app = _app(tmp_path, _raise(BackPressureError(num_queued_requests=64, max_queued_requests=64)))
    r = call(app, "POST", "/v1/completions", BODY)
    assert r["status"] == 503 and r["headers"][b"retry-after"] == b"1"


def test_an_over_long_prompt_is_a_400_with_the_reason(tmp_path):
    app = _app(tmp_path, _raise(ValueError("this model's maximum context length is 128 tokens; ...")))
    r = call(app, "POST", "/v1/completions", BODY)
    assert r["status"] == 400 and "maximum context length is 128" in json.loads(r["body"])["error"]["message"]


def test_open_binds_need_a_key_or_insecure(monkeypatch):
    monkeypatch.delenv("LMSTACK_API_KEY", raising=False)
    base = {"models": [{"name": "tiny", "path": "p"}]}
    assert "every route is open" in check_bind(ServeSettings.model_validate(base))  # loopback: allowed
    with pytest.raises(InsecureBindError, match="serving on 0.0.0.0 .* --insecure"):
        check_bind(ServeSettings.model_validate({**base, "http_host": "0.0.0.0"}))
    assert "open to the network" in check_bind(ServeSettings.model_validate({**base, "http_host": "::",
                                                                               "insecure": True}))
    assert "/healthz" in check_bind(ServeSettings.model_validate({**base, "http_host": "0.0.0.0", "api_key": KEY}))


def test_stored_prompts_have_a_retention(tmp_path):
    store = FeedbackStore(str(tmp_path))
    store.log_completion("old", "tiny", "1", "completions", "p", "c", {})
    store.add_feedback("old", 1.0, None, None, None)
    assert store.forget_before(0) == 0 and store.has_request("old")
    assert store.forget_before(2e10) == 1 and not store.has_request("old")


def test_cli_refuses_an_open_bind_before_any_cluster(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LMSTACK_API_KEY"}
    out = subprocess.run([sys.executable, "-m", "lmstack", "serve", str(tmp_path), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("lmstack serve: error: serving on 0.0.0.0")


def test_the_built_app_pins_ingress_to_the_head_and_bounds_model_queues(tmp_path):
    """Ingress replicas share one feedback.sqlite only if they share a node: all go to the head. Each
    model deployment queues at most limits.max_queued_requests (then 503), never without limit."""
    from lmstack.serve.app import build_app

    (tmp_path / "lmstack_model.json").write_text('{"task": "lm"}')
    app = build_app({"models": [{"name": "m", "path": str(tmp_path)}], "api_key": KEY,
                     "limits": {"max_queued_requests": 7}})
    ingress = app._bound_deployment
    assert ingress.ray_actor_options["resources"] == {"node:__internal_head__": 0.001}
    args, handles = ingress.init_args[0], ingress.init_args[1]
    assert args["api_key"] is None and args["api_key_sha256"] == hashlib.sha256(KEY.encode()).hexdigest()
    assert handles["m"]._bound_deployment._deployment_config.max_queued_requests == 7
