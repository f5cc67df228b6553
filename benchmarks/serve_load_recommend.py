"""/v1/recommend under load: the pieces `serve_load.py --endpoint recommend` uses. Run alone it is that:

    .venv/bin/python benchmarks/serve_load_recommend.py [--model DIR] [--concurrency 32] [--duration 20]
        (= benchmarks/serve_load.py --endpoint recommend ...)

Variants, from one run: lmstack on Ray Serve with @serve.batch, the same without batching, and a plain
FastAPI app (uvicorn, in a subprocess, one torch thread like the replica) ranking with the same exported
model through the same Recommender, one request at a time. Without --model it builds a random SASRec
(ITEMS items, safetensors) in a temp directory; every request is an 8-item history, top 10.

For serve_load.py: ENDPOINT (path, deployment name, plain app), make_model(out, n_layer, n_embd),
request_body() and HISTORY.
"""

from __future__ import annotations

import json
import os
import sys
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
    import serve_load

    serve_load.main(["--endpoint", "recommend", *sys.argv[1:]])


if __name__ == "__main__":
    main()
