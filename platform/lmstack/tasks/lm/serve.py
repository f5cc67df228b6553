"""Language models: a Serve deployment per model (dynamic batching, streaming, in-place version
swap) and the OpenAI-compatible routes /v1/completions and /v1/chat/completions."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from lmstack.api import ServingTask
from lmstack.api.schemas import ChatRequest, CompletionRequest, Sampling, check_limits
from lmstack.tasks.lm.engine import Engine, GenRequest, GenResult


@serve.deployment(max_ongoing_requests=16)
class LanguageModel:
    """The model lives in `user_config` (path, version, batching) rather than in init args, so
    redeploying with another version calls `reconfigure` on the running replicas: the new weights
    load beside the old, then one assignment swaps them, and requests in flight finish on the
    version they started with. No replica restarts, no request is dropped."""

    def __init__(self) -> None:
        import sys

        # Decoding holds the GIL between torch ops; a short switch interval lets the replica's
        # event loop take requests in (and answer Serve's queue-length probes) while a batch
        # runs, so the next batch is full instead of a straggler or two.
        sys.setswitchinterval(0.0005)
        self.engine: Engine | None = None
        self.entry: dict[str, Any] = {}
        self._unbatched = asyncio.Lock()
        self.batches = self.batched_requests = 0  # mean batch size = batched_requests / batches

    async def reconfigure(self, entry: dict[str, Any]) -> None:
        import torch

        device = "cuda" if entry.get("num_gpus", 0) > 0 and torch.cuda.is_available() else "cpu"
        if self.engine is None or (entry["path"], entry["version"]) != (self.entry["path"], self.entry["version"]):
            engine = await asyncio.to_thread(Engine, entry["path"], device)
            self.engine, self.entry = engine, entry  # the swap: one step, between two requests' reads
        else:
            self.entry = entry
        batching = entry["batching"]
        self._batched.set_max_batch_size(batching["max_batch_size"])
        self._batched.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])

    def info(self) -> dict[str, Any]:
        assert self.engine is not None
        return {"name": self.entry["name"], "version": self.entry["version"], "task": "lm",
                "path": self.entry["path"], "context": self.engine.context, "batches": self.batches,
                "batched_requests": self.batched_requests}

    def prompt_for(self, messages: list[dict[str, str]]) -> str:
        assert self.engine is not None
        return self.engine.chat_prompt(messages)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, reqs: list[GenRequest]) -> list[dict[str, Any]]:
        engine, version = self.engine, self.entry["version"]
        assert engine is not None
        self.batches += 1
        self.batched_requests += len(reqs)
        results = await asyncio.to_thread(engine.generate, reqs)
        return [{**asdict(r), "version": version} for r in results]

    def check(self, req: GenRequest) -> str | None:
        assert self.engine is not None
        return self.engine.problem(req.prompt, req.max_tokens)

    async def complete(self, req: GenRequest) -> dict[str, Any]:
        if problem := self.check(req):  # before batching: an over-long request fails alone, as a 400
            raise ValueError(problem)
        if self.entry["batching"]["enabled"]:
            return await self._batched(req)
        async with self._unbatched:  # one request per forward pass: the baseline batching is measured against
            engine, version = self.engine, self.entry["version"]
            assert engine is not None
            [res] = await asyncio.to_thread(engine.generate, [req])
        return {**asdict(res), "version": version}

    async def stream(self, req: GenRequest) -> AsyncIterator[dict[str, Any]]:
        """Streaming bypasses the batch: each stream decodes on its own, one step per thread hop."""
        engine, version = self.engine, self.entry["version"]
        assert engine is not None
        steps = engine.stream(req)
        done = object()
        while True:
            item = await asyncio.to_thread(next, steps, done)
            if item is done:
                return
            delta, final = item  # type: ignore[misc]
            yield {"delta": delta, "final": asdict(final) if final else None, "version": version}


def _gen_request(req: Sampling, prompt: str) -> GenRequest:
    return GenRequest(prompt=prompt, max_tokens=req.max_tokens, temperature=req.temperature,
                      top_p=req.top_p, stop=req.stops(), seed=req.seed)


def _usage(res: dict[str, Any]) -> dict[str, int]:
    return {"prompt_tokens": res["prompt_tokens"], "completion_tokens": res["completion_tokens"],
            "total_tokens": res["prompt_tokens"] + res["completion_tokens"]}


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def add_routes(app: FastAPI, ctx: Any) -> None:
    async def run(request: Request, req: Sampling, prompt: str, endpoint: str, chat: bool):
        handle = ctx.model(req.model, "lm")
        if problem := check_limits(req, prompt, ctx.limits):
            ctx.fail(400, problem, param="prompt" if "prompt" in problem else "max_tokens")
        rid = ctx.new_request_id("chatcmpl" if chat else "cmpl")
        created = int(time.time())
        gen = _gen_request(req, prompt)
        head = {"id": rid, "created": created, "model": req.model}
        if req.stream:
            if problem := await handle.check.remote(gen):  # before the 200 status line goes out
                ctx.fail(400, problem, param="prompt")
            return StreamingResponse(stream(handle, gen, head, prompt, endpoint, chat, req), media_type="text/event-stream",
                                     headers={"x-request-id": rid})
        try:
            res = await handle.complete.remote(gen)
        except ValueError as err:  # the request does not fit the model's context
            ctx.fail(400, str(err).splitlines()[-1].removeprefix("ValueError: "), param="prompt")
        ctx.record(rid, req.model, res["version"], endpoint, prompt, res["text"], req, res["completion_tokens"])
        choice: dict[str, Any] = {"index": 0, "finish_reason": res["finish_reason"], "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": res["text"]}
        else:
            choice["text"] = (prompt if getattr(req, "echo", False) else "") + res["text"]
        body = {**head, "object": "chat.completion" if chat else "text_completion", "choices": [choice],
                "usage": _usage(res), "system_fingerprint": f"{req.model}@{res['version']}"}
        return JSONResponse(body, headers={"x-request-id": rid, "x-lmstack-model-version": res["version"]})

    async def stream(handle, gen: GenRequest, head: dict[str, Any], prompt: str, endpoint: str, chat: bool,
                     req: Sampling) -> AsyncIterator[str]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        text, version, final = [], "", None
        try:
            if chat:
                yield _sse({**head, "object": obj, "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            async for part in handle.options(stream=True).stream.remote(gen):
                version, final = part["version"], part["final"]
                text.append(part["delta"])
                reason = final["finish_reason"] if final else None
                if chat:
                    choice = {"index": 0, "delta": {"content": part["delta"]} if part["delta"] else {},
                              "finish_reason": reason}
                else:
                    choice = {"index": 0, "text": part["delta"], "finish_reason": reason, "logprobs": None}
                yield _sse({**head, "object": obj, "choices": [choice], "system_fingerprint": f"{head['model']}@{version}"})
        except Exception as err:  # the status line is already sent: report in-band, as OpenAI does
            yield _sse({"error": {"message": f"generation failed: {type(err).__name__}", "type": "server_error"}})
        yield "data: [DONE]\n\n"
        if final is not None:
            ctx.record(head["id"], head["model"], version, endpoint, prompt, "".join(text), req,
                       final["completion_tokens"])

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest):
        return await run(request, req, req.prompt, "completions", chat=False)  # type: ignore[arg-type]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, req: ChatRequest):
        handle = ctx.model(req.model, "lm")
        total = sum(len(m.content) for m in req.messages)
        if total > ctx.limits.max_prompt_chars:
            ctx.fail(400, f"messages hold {total} characters; the limit is {ctx.limits.max_prompt_chars}",
                     param="messages")
        prompt = await handle.prompt_for.remote([m.model_dump() for m in req.messages])
        return await run(request, req, prompt, "chat/completions", chat=True)


SERVING = ServingTask(name="lm", deployment=LanguageModel, add_routes=add_routes)

__all__ = ["LanguageModel", "GenResult", "add_routes"]
