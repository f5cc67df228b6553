"""/v1/recommend under load: the pieces `serve_load.py --endpoint recommend` uses, and a standalone run.

    .venv/bin/python benchmarks/serve_load_recommend.py [--model DIR] [--concurrency 32] [--duration 20]

Variants, from one run: lmstack on Ray Serve with @serve.batch, the same without batching, and a plain
FastAPI app (uvicorn, in a subprocess, one torch thread like the replica) ranking with the same exported
model through the same Recommender, one request at a time. Without --model it builds a random SASRec
(ITEMS items, safetensors) in a temp directory; every request is an 8-item history, top 10.

For serve_load.py: ENDPOINT (path, deployment name, plain app), make_model(out, n_layer, n_embd) and
request_body().
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap

ITEMS = 20_000
HISTORY = [f"item{i}" for i in (17, 4242, 99, 1234, 777, 15000, 3, 8080)]

PLAIN_RECOMMEND_APP = textwrap.dedent('''
    import sys, torch
    from fastapi import FastAPI
    from pydantic import BaseModel
    from lmstack.tasks.recommend.predict import Recommender

    torch.set_num_threads(1)  # the Serve replica gets 1 CPU too
    rec = Recommender(sys.argv[1])
    app = FastAPI()

    class Req(BaseModel):
        model: str
        history: list[str]
        k: int = 10
        exclude_seen: bool = True

    @app.post("/v1/recommend")
    def recommend(req: Req):  # sync: FastAPI runs it in its thread pool, as a plain app would
        with torch.no_grad():
            out = rec.recommend([req.history], k=req.k, exclude_seen=req.exclude_seen)[0]
        return {"object": "recommendation", "data": out["data"]}

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
''')

ENDPOINT = {"path": "/v1/recommend", "deployment": "recommend-bench", "app": PLAIN_RECOMMEND_APP}


def request_body() -> dict:
    return {"model": "bench", "history": HISTORY, "k": 10}


def make_model(out: str, n_layer: int = 2, n_embd: int = 64, items: int = ITEMS, max_len: int = 50) -> str:
    """A random SASRec exported as lmstack does: weights, recommend_config.json, items.json, lineage."""
    import torch

    from lmstack.tasks.recommend.model import SASRec, save

    torch.manual_seed(0)
    model = SASRec(items + 2, n_embd, max_len, n_layer=n_layer, n_head=1, dropout=0.0)
    save(model, out)
    vocab = ["<pad>", "<unk>", *(f"item{i}" for i in range(items))]
    with open(os.path.join(out, "items.json"), "w") as f:
        json.dump({"items": vocab, "counts": [0, 0, *range(items, 0, -1)],
                   "columns": {"user": "user", "item": "item", "time": None},
                   "eval": {"num_negatives": 100, "seed": 0}}, f)
    with open(os.path.join(out, "lmstack_model.json"), "w") as f:
        json.dump({"task": "recommend"}, f)
    return out


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from serve_load import free_port, load, wait_ready

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="exported recommend model directory (default: a random SASRec)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per variant")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=10.0, help="@serve.batch wait for a fuller batch")
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    from ray import serve

    from lmstack import runtime
    from lmstack.serve.app import deploy

    tmp = tempfile.mkdtemp(prefix="serve_load_recommend_")
    model = args.model or make_model(os.path.join(tmp, "model"), args.n_layer, args.n_embd)
    body = request_body()
    runtime.connect(num_cpus=2)
    port = free_port()
    url = f"http://127.0.0.1:{port}{ENDPOINT['path']}"
    results: dict[str, dict[str, float]] = {}
    for variant, batching in (("serve_batched", True), ("serve_unbatched", False)):
        settings = {"models": [{"name": "bench", "path": model, "num_cpus": 1, "max_ongoing_requests": 64,
                                "batching": {"enabled": batching, "max_batch_size": args.max_batch_size,
                                             "batch_wait_timeout_s": args.batch_wait_ms / 1000}}],
                    "feedback_dir": os.path.join(tmp, "feedback"), "log_requests": False, "access_log": False}
        deploy(settings, port=port)
        replica = serve.get_deployment_handle(ENDPOINT["deployment"], app_name="lmstack")
        before = replica.info.remote().result()
        results[variant] = asyncio.run(load(url, args.concurrency, args.duration, body))
        after = replica.info.remote().result()
        batches = max(1, after["batches"] - before["batches"])
        results[variant]["mean_batch"] = (after["batched_requests"] - before["batched_requests"]) / batches
        print(variant, json.dumps({k: round(v, 1) for k, v in results[variant].items()}), flush=True)
    serve.shutdown()

    plain_port = free_port()
    script = os.path.join(tmp, "plain_app.py")
    with open(script, "w") as f:
        f.write(ENDPOINT["app"])
    proc = subprocess.Popen([sys.executable, script, model, str(plain_port)])
    try:
        plain_url = f"http://127.0.0.1:{plain_port}{ENDPOINT['path']}"
        wait_ready(plain_url, body)
        results["plain_fastapi"] = asyncio.run(load(plain_url, args.concurrency, args.duration, body))
        print("plain_fastapi", json.dumps({k: round(v, 1) for k, v in results["plain_fastapi"].items()}), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)

    b, u, p = results["serve_batched"], results["serve_unbatched"], results["plain_fastapi"]
    print(f"\n/v1/recommend: concurrency {args.concurrency}, {len(HISTORY)}-item histories, top 10 of "
          f"{ITEMS if not args.model else 'the model'} items, {args.duration:.0f} s per variant")
    print(f"{'variant':<16}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<16}{r['rps']:>8.1f}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}{r['errors']:>8.0f}")
    print(f"mean batch size (batched): {b['mean_batch']:.1f} of {args.max_batch_size}; machine load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"batched / unbatched throughput: {b['rps'] / u['rps']:.2f}x  (p99 {b['p99_ms'] / u['p99_ms']:.2f}x)")
    print(f"batched / plain FastAPI throughput: {b['rps'] / p['rps']:.2f}x  (p99 {b['p99_ms'] / p['p99_ms']:.2f}x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
