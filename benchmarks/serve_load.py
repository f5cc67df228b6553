"""Load on a serving endpoint over localhost: lmstack on Ray Serve with dynamic batching, the same
without batching, and a plain FastAPI app (uvicorn, in a subprocess) doing the same work with the same
model, from one run. Prints throughput and p50/p99 latency per variant, the ratios, and as its last line
one JSON object with each variant's req/s and p99 (batched vs unbatched first).

    .venv/bin/python benchmarks/serve_load.py [--endpoint completions|classify|recommend|transcribe]
        [--model DIR] [--concurrency 32] [--duration 20]

Without --model it builds a small random model in a temp directory: a GPT-2 (char tokenizer,
safetensors) causal LM for completions, a 3-label sequence classifier for classify, a SASRec over
20,000 items for recommend (8-item histories, top 10; serve_load_recommend.py), a transformer CTC model
for transcribe (multipart WAV uploads; serve_load_transcribe.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import string
import subprocess
import sys
import tempfile
import textwrap
import time

import aiohttp

PLAIN_APP = textwrap.dedent('''
    import sys, torch
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)  # the Serve replica gets 1 CPU too
    path = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True).eval()
    app = FastAPI()

    class Req(BaseModel):
        model: str
        prompt: str
        max_tokens: int = 16
        temperature: float = 0.0

    @app.post("/v1/completions")
    def complete(req: Req):  # sync: FastAPI runs it in its thread pool, as a plain app would
        ids = tok(req.prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=req.max_tokens, do_sample=False,
                                 pad_token_id=tok.eos_token_id)
        text = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        return {"choices": [{"text": text}]}

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
''')


PLAIN_CLASSIFY_APP = textwrap.dedent('''
    import sys, torch
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(1)  # the Serve replica gets 1 CPU too
    path = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True,
                                                               use_safetensors=True).eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    app = FastAPI()

    class Req(BaseModel):
        model: str
        input: str

    @app.post("/v1/classify")
    def classify(req: Req):
        ids = tok(req.input, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            probs = torch.softmax(model(**ids).logits[0], -1)
        return {"data": [{"label": labels[int(probs.argmax())],
                          "scores": dict(zip(labels, probs.tolist()))}]}

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
''')

ENDPOINTS = {
    "completions": {"path": "/v1/completions", "deployment": "lm-bench", "app": PLAIN_APP},
    "classify": {"path": "/v1/classify", "deployment": "classify-bench", "app": PLAIN_CLASSIFY_APP},
}
TEXT = "The quick brown fox jumps over the lazy dog while the river runs past the old mill"


def request_body(endpoint: str, max_tokens: int) -> dict:
    if endpoint == "classify":
        return {"model": "bench", "input": TEXT}
    return {"model": "bench", "prompt": "The quick brown fox ", "max_tokens": max_tokens, "temperature": 0}


def make_model(out: str, n_layer: int, n_embd: int, endpoint: str = "completions") -> str:
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from lmstack.data.tokenizer import char_tokenizer

    torch.manual_seed(0)
    tok = char_tokenizer(string.printable)
    eos = tok.eos_token_id
    labels = {"num_labels": 3, "id2label": {0: "a", 1: "b", 2: "c"}} if endpoint == "classify" else {}
    cfg = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=n_embd, n_layer=n_layer, n_head=4,
                     bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **labels)
    cls = GPT2ForSequenceClassification if endpoint == "classify" else GPT2LMHeadModel
    cls(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    if endpoint == "classify":
        with open(os.path.join(out, "lmstack_model.json"), "w") as f:
            json.dump({"task": "classify", "strategy": "full"}, f)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, concurrency: int, duration: float, body: dict) -> dict[str, float]:
    """`concurrency` closed-loop clients for `duration` seconds (after a short warm-up)."""
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def one() -> float:
            t = time.perf_counter()
            async with session.post(url, json=body) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
            return time.perf_counter() - t

        await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up
        end = time.perf_counter() + duration

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                try:
                    latencies.append(await one())
                except Exception:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"requests": len(latencies), "errors": errors, "rps": len(latencies) / elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def wait_ready(url: str, body: dict, timeout: float = 120) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            requests.post(url, json=body, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.5)
    raise TimeoutError(url)


# Per endpoint: the @serve.batch wait and batch size it is measured with unless given.
DEFAULTS = {"completions": (50.0, 32), "classify": (50.0, 32), "recommend": (10.0, 32), "transcribe": (50.0, 16)}


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """completions, classify or recommend: batched vs unbatched Serve vs plain FastAPI; prints the table
    and returns the figures (transcribe has its own, multipart, run in serve_load_transcribe.py)."""
    from ray import serve

    from lmstack import runtime
    from lmstack.serve.app import deploy

    tmp = tempfile.mkdtemp(prefix="serve_load_")
    if args.endpoint == "recommend":
        import serve_load_recommend as rec

        endpoint, body = rec.ENDPOINT, rec.request_body()
        model = args.model or rec.make_model(os.path.join(tmp, "model"))
        work = f"{len(rec.HISTORY)}-item histories, top 10"
    else:
        endpoint, body = ENDPOINTS[args.endpoint], request_body(args.endpoint, args.max_tokens)
        model = args.model or make_model(os.path.join(tmp, "model"), args.n_layer, args.n_embd, args.endpoint)
        work = f"{args.max_tokens} tokens/request" if args.endpoint == "completions" else f"{len(TEXT)}-char texts"
    runtime.connect(num_cpus=2)
    results: dict[str, dict[str, float]] = {}
    port = free_port()
    url = f"http://127.0.0.1:{port}{endpoint['path']}"
    for variant, batching in (("serve_batched", True), ("serve_unbatched", False)):
        settings = {"models": [{"name": "bench", "path": model, "num_cpus": 1, "max_ongoing_requests": 64,
                                "batching": {"enabled": batching, "max_batch_size": args.max_batch_size,
                                             "batch_wait_timeout_s": args.batch_wait_ms / 1000}}],
                    "feedback_dir": os.path.join(tmp, "feedback"), "log_requests": False,
                    "access_log": False}
        deploy(settings, port=port)
        replica = serve.get_deployment_handle(endpoint["deployment"], app_name="lmstack")
        before = replica.info.remote().result()
        results[variant] = asyncio.run(load(url, args.concurrency, args.duration, body))
        after = replica.info.remote().result()
        if batching:  # how full the batches were: the figure that explains the speed-up (or its absence)
            batches = max(1, after["batches"] - before["batches"])
            results[variant]["mean_batch"] = (after["batched_requests"] - before["batched_requests"]) / batches
        print(variant, json.dumps({k: round(v, 1) for k, v in results[variant].items()}), flush=True)
    serve.shutdown()

    plain_port = free_port()
    script = os.path.join(tmp, "plain_app.py")
    with open(script, "w") as f:
        f.write(endpoint["app"])
    proc = subprocess.Popen([sys.executable, script, model, str(plain_port)])
    try:
        plain_url = f"http://127.0.0.1:{plain_port}{endpoint['path']}"
        wait_ready(plain_url, body)
        results["plain_fastapi"] = asyncio.run(load(plain_url, args.concurrency, args.duration, body))
        print("plain_fastapi", json.dumps({k: round(v, 1) for k, v in results["plain_fastapi"].items()}), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)

    b, u, p = results["serve_batched"], results["serve_unbatched"], results["plain_fastapi"]
    print(f"\n{endpoint['path']}: concurrency {args.concurrency}, {work}, {args.duration:.0f} s per variant")
    print(f"{'variant':<16}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<16}{r['rps']:>8.1f}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}{r['errors']:>8.0f}")
    print(f"mean batch size (batched): {b['mean_batch']:.1f} of {args.max_batch_size}; machine load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"batched / unbatched throughput: {b['rps'] / u['rps']:.2f}x  (p99 {b['p99_ms'] / u['p99_ms']:.2f}x)")
    print(f"batched / plain FastAPI throughput: {b['rps'] / p['rps']:.2f}x  (p99 {b['p99_ms'] / p['p99_ms']:.2f}x)")
    return results


def summary(endpoint: str, results: dict[str, dict[str, float]], args: argparse.Namespace) -> dict:
    """The last line: each variant's req/s and p99, and batched over unbatched."""
    b, u = results["serve_batched"], results["serve_unbatched"]
    out: dict = {"endpoint": endpoint, "concurrency": args.concurrency, "duration_s": args.duration,
                 "max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms,
                 "load_average": round(os.getloadavg()[0], 1)}
    for name, r in results.items():
        out[name] = {k: round(r[k], 1) for k in ("rps", "p50_ms", "p99_ms", "errors", "mean_batch") if k in r}
    out["batched_over_unbatched_rps"] = round(b["rps"] / u["rps"], 2) if u["rps"] else None
    out["batched_over_unbatched_p99"] = round(b["p99_ms"] / u["p99_ms"], 2) if u["p99_ms"] else None
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", choices=sorted(DEFAULTS), default="completions")
    ap.add_argument("--model", help="exported model directory (default: a small random one)")
    ap.add_argument("--audio", help="transcribe: the WAV every request uploads (default: an FSDD file or a tone)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per variant")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-batch-size", type=int, help="default: 16 for transcribe, else 32")
    ap.add_argument("--batch-wait-ms", type=float,
                    help="@serve.batch wait for a fuller batch (default: 10 for recommend, else 50)")
    ap.add_argument("--n-layer", type=int, default=6)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    wait_ms, batch = DEFAULTS[args.endpoint]
    args.batch_wait_ms = wait_ms if args.batch_wait_ms is None else args.batch_wait_ms
    args.max_batch_size = batch if args.max_batch_size is None else args.max_batch_size

    # The sibling modules (serve_load_recommend/_transcribe) import from here and from each other by name.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.endpoint == "transcribe":
        import serve_load_transcribe

        results = serve_load_transcribe.run(args)
    else:
        results = run(args)
    line = summary(args.endpoint, results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "summary": line}, f, indent=2)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
