"""benchmarks/serve_load.py --endpoint recommend|transcribe: the dispatch, each endpoint's batching
defaults and the one-JSON-object last line (no Ray: the measuring runs are replaced)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


def _serve_load():
    spec = importlib.util.spec_from_file_location("bench_serve_load", os.path.join(BENCH, "serve_load.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _figures(batched_rps: float) -> dict[str, dict[str, float]]:
    return {"serve_batched": {"rps": batched_rps, "p50_ms": 40.0, "p99_ms": 90.0, "errors": 0, "mean_batch": 6.0},
            "serve_unbatched": {"rps": 10.0, "p50_ms": 80.0, "p99_ms": 300.0, "errors": 0},
            "plain_fastapi": {"rps": 12.0, "p50_ms": 70.0, "p99_ms": 250.0, "errors": 1}}


@pytest.mark.parametrize("endpoint, wait_ms, batch", [("recommend", 10.0, 32), ("transcribe", 50.0, 16)])
def test_endpoint_dispatch_defaults_and_json_last_line(endpoint, wait_ms, batch, monkeypatch, capsys):
    bench = _serve_load()
    seen = {}

    def fake_run(args):
        seen.update(endpoint=args.endpoint, wait=args.batch_wait_ms, batch=args.max_batch_size)
        return _figures(30.0)

    monkeypatch.setattr(bench, "run", fake_run)
    monkeypatch.setitem(sys.modules, "serve_load_transcribe", types.SimpleNamespace(run=fake_run))
    bench.main(["--endpoint", endpoint, "--duration", "1"])
    assert seen == {"endpoint": endpoint, "wait": wait_ms, "batch": batch}
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["endpoint"] == endpoint and last["batch_wait_ms"] == wait_ms and last["max_batch_size"] == batch
    assert last["serve_batched"]["rps"] == 30.0 and last["serve_unbatched"]["p99_ms"] == 300.0
    assert last["batched_over_unbatched_rps"] == 3.0 and last["batched_over_unbatched_p99"] == 0.3
    assert last["plain_fastapi"]["errors"] == 1
