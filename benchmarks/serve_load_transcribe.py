"""Load on /v1/audio/transcriptions (multipart uploads, as OpenAI's client sends them): lmstack on Ray
Serve with @serve.batch, the same without batching, and a plain FastAPI app doing the same work with
the same SpeechModel (uvicorn, in a subprocess), from one run. `benchmarks/serve_load.py --endpoint
transcribe` calls `run(args)`; it also runs alone:

    .venv/bin/python benchmarks/serve_load_transcribe.py [--model DIR] [--audio WAV]
        [--concurrency 32] [--duration 20] [--max-batch-size 16] [--batch-wait-ms 50]

Without --model it exports a randomly initialised transformer CTC model (the shape of
jobs/recipes/speech_fsdd.yaml: the work per request is the same as a trained one's, greedy decoding);
without --audio it uses one FSDD recording when LMSTACK_DATA is set, else a generated 0.5 s clip.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import aiohttp
import numpy as np

PATH = "/v1/audio/transcriptions"
DEPLOYMENT = "speech-bench"  # the serve app names a model's deployment "<task>-<name>"

PLAIN_TRANSCRIBE_APP = textwrap.dedent('''
    import sys, torch
    from fastapi import FastAPI, File, Form, UploadFile
    from lmstack.tasks.speech.predict import SpeechModel

    torch.set_num_threads(1)  # the Serve replica gets 1 CPU too
    model = SpeechModel(sys.argv[1])
    app = FastAPI()

    @app.post("/v1/audio/transcriptions")
    def transcribe(file: UploadFile = File(...), model_name: str = Form(..., alias="model")):
        wave = model.read(file.file.read(), check_silence=False)  # sync: FastAPI's thread pool
        return {"text": model.transcribe([wave])[0]}

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
''')


def make_model(out: str, sample_rate: int = 8000) -> str:
    """A random transformer CTC export (speech_fsdd.yaml's shape), loadable by serve/predict."""
    import torch

    from lmstack.tasks.speech.audio import Features
    from lmstack.tasks.speech.config import DEFAULT_VOCAB
    from lmstack.tasks.speech.decode import CharVocab
    from lmstack.tasks.speech.model import CTCModel, arch_config
    from lmstack.tasks.speech.spec import SpeechSpec

    torch.manual_seed(0)
    shape = arch_config("transformer", 40, len(CharVocab(DEFAULT_VOCAB)), 96, 4, 4, 4, 0.1, 2, 15)
    model = CTCModel({**shape, "decode": {"method": "greedy"}}).eval()
    spec = SpeechSpec()
    spec.export(model, out)
    spec.export_assets({"features": Features(sample_rate=sample_rate).to_dict(), "vocab": DEFAULT_VOCAB,
                        "source": {}, "max_seconds": 10.0, "silence_dbfs": -50.0}, out)
    with open(os.path.join(out, "lmstack_model.json"), "w") as f:
        json.dump({"task": "speech"}, f)
    return out


def audio_bytes(path: str | None) -> bytes:
    if path:
        with open(path, "rb") as f:
            return f.read()
    fsdd = os.path.join(os.environ.get("LMSTACK_DATA", ""), "fsdd", "recordings", "7_theo_0.wav")
    if os.path.exists(fsdd):
        with open(fsdd, "rb") as f:
            return f.read()
    import soundfile as sf

    t = np.arange(4000) / 8000
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 8000, format="WAV")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, concurrency: int, duration: float, wav: bytes) -> dict[str, float]:
    """`concurrency` closed-loop clients posting multipart uploads for `duration` seconds (after a warm-up)."""
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def one() -> float:
            form = aiohttp.FormData()
            form.add_field("model", "bench")
            form.add_field("file", wav, filename="a.wav", content_type="audio/wav")
            t = time.perf_counter()
            async with session.post(url, data=form) as r:
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


def wait_ready(url: str, wav: bytes, timeout: float = 120) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            requests.post(url, files={"file": ("a.wav", wav)}, data={"model": "bench"}, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.5)
    raise TimeoutError(url)


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Batched vs unbatched Serve vs plain FastAPI; prints the table and returns the figures. Uses
    args.model, args.audio, args.concurrency, args.duration, args.max_batch_size, args.batch_wait_ms."""
    from ray import serve

    from lmstack import runtime
    from lmstack.serve.app import deploy

    tmp = tempfile.mkdtemp(prefix="serve_load_stt_")
    model = getattr(args, "model", None) or make_model(os.path.join(tmp, "model"))
    wav = audio_bytes(getattr(args, "audio", None))
    runtime.connect(num_cpus=2)
    results: dict[str, dict[str, float]] = {}
    port = free_port()
    url = f"http://127.0.0.1:{port}{PATH}"
    for variant, batching in (("serve_batched", True), ("serve_unbatched", False)):
        settings = {"models": [{"name": "bench", "path": model, "task": "speech", "num_cpus": 1,
                                "max_ongoing_requests": 64,
                                "batching": {"enabled": batching, "max_batch_size": args.max_batch_size,
                                             "batch_wait_timeout_s": args.batch_wait_ms / 1000}}],
                    "feedback_dir": os.path.join(tmp, "feedback"), "log_requests": False, "access_log": False}
        deploy(settings, port=port)
        replica = serve.get_deployment_handle(DEPLOYMENT, app_name="lmstack")
        before = replica.info.remote().result()
        results[variant] = asyncio.run(load(url, args.concurrency, args.duration, wav))
        after = replica.info.remote().result()
        if batching:
            batches = max(1, after["batches"] - before["batches"])
            results[variant]["mean_batch"] = (after["batched_requests"] - before["batched_requests"]) / batches
        print(variant, json.dumps({k: round(v, 1) for k, v in results[variant].items()}), flush=True)
    serve.shutdown()

    plain_port = free_port()
    script = os.path.join(tmp, "plain_app.py")
    with open(script, "w") as f:
        f.write(PLAIN_TRANSCRIBE_APP)
    proc = subprocess.Popen([sys.executable, script, model, str(plain_port)])
    try:
        plain_url = f"http://127.0.0.1:{plain_port}{PATH}"
        wait_ready(plain_url, wav)
        results["plain_fastapi"] = asyncio.run(load(plain_url, args.concurrency, args.duration, wav))
        print("plain_fastapi", json.dumps({k: round(v, 1) for k, v in results["plain_fastapi"].items()}), flush=True)
    finally:
        proc.terminate()
        proc.wait(30)

    b, u, p = results["serve_batched"], results["serve_unbatched"], results["plain_fastapi"]
    print(f"\n{PATH}: concurrency {args.concurrency}, {len(wav)}-byte WAV uploads, {args.duration:.0f} s per variant")
    print(f"{'variant':<16}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<16}{r['rps']:>8.1f}{r['p50_ms']:>9.0f}{r['p99_ms']:>9.0f}{r['errors']:>8.0f}")
    print(f"mean batch size (batched): {b['mean_batch']:.1f} of {args.max_batch_size}; machine load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"batched / unbatched throughput: {b['rps'] / u['rps']:.2f}x  (p99 {b['p99_ms'] / u['p99_ms']:.2f}x)")
    print(f"batched / plain FastAPI throughput: {b['rps'] / p['rps']:.2f}x  (p99 {b['p99_ms'] / p['p99_ms']:.2f}x)")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="exported speech model directory (default: a random one)")
    ap.add_argument("--audio", help="the WAV every request uploads")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per variant")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--batch-wait-ms", type=float, default=50.0)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    results = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
