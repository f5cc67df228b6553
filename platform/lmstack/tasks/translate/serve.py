"""Machine translation: a Serve deployment per translate model and the route /v1/translate.

The replica calls the translate task's own predict(), so serving returns exactly what
`lmstack predict` returns for the same model directory and decoding options.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import Field
from ray import serve

from lmstack.api import ServingTask
from lmstack.api.schemas import TextsRequest


class TranslateRequest(TextsRequest):
    direction: Literal["zh-en", "en-zh"] | None = None  # default: the model's first direction
    num_beams: int | None = Field(None, ge=1, le=16)
    length_penalty: float | None = Field(None, ge=-5, le=5)
    max_new_tokens: int | None = Field(None, ge=1, le=512)

    def options(self) -> dict[str, Any]:
        keys = ("direction", "num_beams", "length_penalty", "max_new_tokens")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@serve.deployment(max_ongoing_requests=32)
class Translator:
    """Model in `user_config` like the LM deployment, so a version swap reloads without a restart."""

    def __init__(self) -> None:
        self.entry: dict[str, Any] = {}
        self.batches = self.batched_requests = 0

    async def reconfigure(self, entry: dict[str, Any]) -> None:
        from lmstack.tasks.translate.serving import load

        await asyncio.to_thread(load, entry["path"])  # loaded (and cached) before the entry points at it
        self.entry = entry
        batching = entry["batching"]
        self._batched.set_max_batch_size(batching["max_batch_size"] if batching["enabled"] else 1)
        self._batched.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])

    def info(self) -> dict[str, Any]:
        from lmstack.tasks.translate.serving import lineage

        section = (lineage(self.entry["path"]).get("recipe") or {}).get("translate") or {}
        return {"name": self.entry["name"], "version": self.entry["version"], "task": "translate",
                "path": self.entry["path"], "directions": section.get("directions"), "batches": self.batches,
                "batched_requests": self.batched_requests}

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list[tuple[list[str], dict[str, Any]]]) -> list[dict[str, Any]]:
        """Requests with the same decoding options share one predict() call, then split back."""
        from lmstack.tasks.translate.spec import predict

        path, version = self.entry["path"], self.entry["version"]
        self.batches += 1
        self.batched_requests += len(requests)
        groups: dict[str, list[int]] = {}
        for i, (_, opts) in enumerate(requests):
            groups.setdefault(json.dumps(opts, sort_keys=True), []).append(i)
        out: list[dict[str, Any]] = [{} for _ in requests]
        for key, members in groups.items():
            flat = [t for i in members for t in requests[i][0]]
            rows = await asyncio.to_thread(predict, path, flat, **json.loads(key))
            start = 0
            for i in members:
                n = len(requests[i][0])
                out[i] = {"version": version, "data": [{"index": j, **r} for j, r in enumerate(rows[start:start + n])]}
                start += n
        return out

    def check(self, opts: dict[str, Any]) -> None:
        """Per request, before batching: a direction the model was not trained for fails this request
        alone (raised inside the batch, it failed every request batched with it)."""
        direction, trained = opts.get("direction"), self.info().get("directions")
        if direction is not None and trained and direction not in trained:
            raise ValueError(f"direction {direction!r}: model {self.entry['name']!r} translates {list(trained)}")

    async def translate(self, texts: list[str], opts: dict[str, Any]) -> dict[str, Any]:
        self.check(opts)
        return await self._batched((texts, opts))


def add_routes(app: FastAPI, ctx: Any) -> None:
    @app.post("/v1/translate")
    async def translate(req: TranslateRequest):
        handle = ctx.model(req.model, "translate")
        if problem := req.problem(ctx.limits):
            ctx.fail(400, problem, param="input")
        texts = req.texts()
        work = len(texts) * (req.num_beams or 1) * (req.max_new_tokens or 128)
        if work > ctx.limits.max_decode_tokens:
            ctx.fail(400, f"{len(texts)} inputs x {req.num_beams or 1} beams x {req.max_new_tokens or 128} new tokens = "
                     f"{work}, over the limit of {ctx.limits.max_decode_tokens} decoded tokens per request", param="input")
        rid = ctx.new_request_id("tr")
        try:
            res = await handle.translate.remote(texts, req.options())
        except ValueError as err:  # e.g. a direction the model was not trained for
            ctx.fail(400, str(err).splitlines()[-1].removeprefix("ValueError: "), param="direction")
        if ctx.settings.log_requests:  # so /v1/feedback can correct a translation against this id
            await asyncio.to_thread(ctx.store.log_completion, rid, req.model, res["version"], "translate",
                                    json.dumps(texts, ensure_ascii=False),
                                    json.dumps([d["translation"] for d in res["data"]], ensure_ascii=False), {})
        return {"id": rid, "object": "translation", "model": req.model, "version": res["version"],
                "data": res["data"]}


SERVING = ServingTask(name="translate", deployment=Translator, add_routes=add_routes)

__all__ = ["TranslateRequest", "Translator", "add_routes"]
