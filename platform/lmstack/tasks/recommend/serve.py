"""Recommendation: a Serve deployment per recommend model and the route POST /v1/recommend.

The replica ranks with the same Recommender that `lmstack predict` and `lmstack evaluate` use, and
concurrent requests share one forward pass through @serve.batch.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import Field
from ray import serve

from lmstack.api import ServingTask
from lmstack.api.schemas import Body


class RecommendRequest(Body):
    max_history: ClassVar[int] = 1000  # a longer history is a 413: the model reads the latest max_len anyway
    max_k: ClassVar[int] = 100
    model: str = Field(min_length=1, max_length=128)
    history: list[str | int] = Field(max_length=100_000)  # item ids, oldest first
    k: int = Field(10, ge=1)
    exclude_seen: bool = True
    user: str | None = Field(None, max_length=256)

    def problem(self) -> tuple[int, str, str] | None:
        """(status, message, param) of the first limit the request breaks; None when it fits."""
        if not self.history:
            return 400, "history is empty: give at least one item id", "history"
        if len(self.history) > self.max_history:
            return 413, f"history has {len(self.history)} items; the limit is {self.max_history}", "history"
        if self.k > self.max_k:
            return 400, f"k is {self.k}; the limit is {self.max_k}", "k"
        if any(isinstance(i, str) and (not i.strip() or len(i) > 256) for i in self.history):
            return 400, "history items must be non-empty ids of at most 256 characters", "history"
        return None


@serve.deployment(max_ongoing_requests=32)
class Recommend:
    """Model in `user_config` like the other tasks: a new version loads beside the old one and replaces
    it in one assignment, so requests in flight finish on the version they started with."""

    def __init__(self) -> None:
        self.rec: Any = None
        self.entry: dict[str, Any] = {}
        self.batches = self.batched_requests = 0

    async def reconfigure(self, entry: dict[str, Any]) -> None:
        import torch

        from lmstack.tasks.recommend.predict import Recommender

        torch.set_num_threads(max(1, int(entry.get("num_cpus") or 1)))
        if self.rec is None or (entry["path"], entry["version"]) != (self.entry["path"], self.entry["version"]):
            rec = await asyncio.to_thread(Recommender, entry["path"])
            self.rec, self.entry = rec, entry
        else:
            self.entry = entry
        batching = entry["batching"]
        self._batched.set_max_batch_size(batching["max_batch_size"] if batching["enabled"] else 1)
        self._batched.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])

    def info(self) -> dict[str, Any]:
        return {"name": self.entry["name"], "version": self.entry["version"], "task": "recommend",
                "path": self.entry["path"], "items": self.rec.num_items - 2, "max_len": self.rec.max_len,
                "batches": self.batches, "batched_requests": self.batched_requests}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list[tuple[list[str], int, bool]]) -> list[dict[str, Any]]:
        """Several requests' histories in one forward pass; k and exclude_seen per request."""
        rec, version = self.rec, self.entry["version"]
        self.batches += 1
        self.batched_requests += len(requests)
        k_max = max(k for _, k, _ in requests)

        def run() -> list[dict[str, Any]]:
            out = []
            # One pass per exclude_seen value (usually one): the scores are shared, only the masking differs.
            for flag in {e for _, _, e in requests}:
                idx = [i for i, (_, _, e) in enumerate(requests) if e == flag]
                res = rec.recommend([requests[i][0] for i in idx], k=k_max, exclude_seen=flag)
                out.extend(zip(idx, res, strict=True))
            return [r for _, r in sorted(out, key=lambda p: p[0])]

        results = await asyncio.to_thread(run)
        return [{**r, "data": r["data"][:k], "version": version} for r, (_, k, _) in zip(results, requests, strict=True)]

    async def recommend(self, history: list[str], k: int, exclude_seen: bool) -> dict[str, Any]:
        return await self._batched((history, k, exclude_seen))


def add_routes(app: FastAPI, ctx: Any) -> None:
    @app.post("/v1/recommend")
    async def recommend(req: RecommendRequest):
        handle = ctx.model(req.model, "recommend")
        if problem := req.problem():
            ctx.fail(*problem)
        history = [str(i) for i in req.history]
        rid = ctx.new_request_id("rec")
        res = await handle.recommend.remote(history, req.k, req.exclude_seen)
        if ctx.settings.log_requests:  # so /v1/feedback can rate or click a recommended item by this id
            await asyncio.to_thread(ctx.store.log_completion, rid, req.model, res["version"], "recommend",
                                    json.dumps(history, ensure_ascii=False),
                                    json.dumps([d["item"] for d in res["data"]], ensure_ascii=False),
                                    {"k": req.k, "exclude_seen": req.exclude_seen})
        return {"id": rid, "object": "recommendation", "model": req.model, "version": res["version"],
                "data": res["data"], "unknown_items": res["unknown_items"], "fallback": res["fallback"]}


SERVING = ServingTask(name="recommend", deployment=Recommend, add_routes=add_routes)

__all__ = ["SERVING", "Recommend", "RecommendRequest", "add_routes"]
