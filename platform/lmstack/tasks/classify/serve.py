"""Text classification: a Serve deployment per classify model and the route /v1/classify.

The replica calls the classify task's own predict path (lmstack.tasks.classify.predict), so serving gives
exactly what `lmstack predict` and `lmstack evaluate` give for the same model directory, whichever
strategy made it (fine-tuned transformer, features + linear head, TF-IDF).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI
from ray import serve

from lmstack.api import ServingTask
from lmstack.api.schemas import TextsRequest


class ClassifyRequest(TextsRequest):
    pass


@serve.deployment(max_ongoing_requests=32)
class Classifier:
    """Model in `user_config` like the LM deployment: a new version loads beside the old one and
    replaces it in one assignment, so requests in flight finish on the version they started with."""

    def __init__(self) -> None:
        self.model: Any = None
        self.entry: dict[str, Any] = {}
        self.batches = self.batched_requests = 0

    async def reconfigure(self, entry: dict[str, Any]) -> None:
        from lmstack.tasks.classify.predict import load

        if self.model is None or (entry["path"], entry["version"]) != (self.entry["path"], self.entry["version"]):
            model = await asyncio.to_thread(load, entry["path"])
            self.model, self.entry = model, entry
        else:
            self.entry = entry
        batching = entry["batching"]
        self._batched.set_max_batch_size(batching["max_batch_size"] if batching["enabled"] else 1)
        self._batched.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])

    def info(self) -> dict[str, Any]:
        return {"name": self.entry["name"], "version": self.entry["version"], "task": "classify",
                "path": self.entry["path"], "labels": list(self.model.labels), "batches": self.batches,
                "batched_requests": self.batched_requests}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list[list[str]]) -> list[dict[str, Any]]:
        """Several requests' texts in one forward pass, then split back per request."""
        model, version = self.model, self.entry["version"]
        self.batches += 1
        self.batched_requests += len(requests)
        flat = [t for texts in requests for t in texts]
        probs = await asyncio.to_thread(model.proba, flat, 64)
        out, start = [], 0
        for texts in requests:
            rows = probs[start:start + len(texts)]
            start += len(texts)
            out.append({"version": version, "data": [
                {"index": i, "label": model.labels[int(row.argmax())],
                 "scores": {lab: round(float(p), 6) for lab, p in zip(model.labels, row, strict=True)}}
                for i, row in enumerate(rows)]})
        return out

    async def classify(self, texts: list[str]) -> dict[str, Any]:
        return await self._batched(texts)


def add_routes(app: FastAPI, ctx: Any) -> None:
    @app.post("/v1/classify")
    async def classify(req: ClassifyRequest):
        handle = ctx.model(req.model, "classify")
        if problem := req.problem(ctx.limits):
            ctx.fail(400, problem, param="input")
        texts = req.texts()
        rid = ctx.new_request_id("clf")
        res = await handle.classify.remote(texts)
        if ctx.settings.log_requests:  # so /v1/feedback can correct a label against this id
            await asyncio.to_thread(ctx.store.log_completion, rid, req.model, res["version"], "classify",
                                    json.dumps(texts, ensure_ascii=False),
                                    json.dumps([d["label"] for d in res["data"]], ensure_ascii=False), {})
        return {"id": rid, "object": "classification", "model": req.model, "version": res["version"],
                "data": res["data"]}


SERVING = ServingTask(name="classify", deployment=Classifier, add_routes=add_routes)

__all__ = ["Classifier", "ClassifyRequest", "add_routes"]
