"""Speech serving: a Serve deployment per speech model and OpenAI's POST /v1/audio/transcriptions.

The route reads the multipart form (`file`, `model`, optional `language`, `prompt`, `response_format`,
`temperature`) and checks it; the replica decodes the audio (soundfile) and sends the waveform into a
`@serve.batch` that transcribes several requests' audio in one forward pass. Anything wrong with the
upload (not audio, empty, too long, too large) is a 4xx with OpenAI's error body, never a 500. With
request logging on, the upload is kept under <feedback_dir>/audio/ and the transcript is logged, so a
/v1/feedback correction of the response id is a new (audio path, text) training pair.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from lmstack.api import ServingTask

FORMATS = ("json", "text", "verbose_json")
UNSUPPORTED_FORMATS = ("srt", "vtt")
ENDPOINT = "audio.transcriptions"


@serve.deployment(max_ongoing_requests=32)
class Transcriber:
    """The model arrives in `user_config` (reconfigure): a new version loads beside the old one and
    replaces it in one assignment, so requests in flight finish on the version they started with."""

    def __init__(self) -> None:
        self.model: Any = None
        self.entry: dict[str, Any] = {}
        self.batches = self.batched_requests = 0

    async def reconfigure(self, entry: dict[str, Any]) -> None:
        from lmstack.tasks.speech.predict import SpeechModel

        if self.model is None or (entry["path"], entry["version"]) != (self.entry["path"], self.entry["version"]):
            model = await asyncio.to_thread(SpeechModel, entry["path"])
            self.model, self.entry = model, entry
        else:
            self.entry = entry
        batching = entry["batching"]
        self._batched.set_max_batch_size(batching["max_batch_size"] if batching["enabled"] else 1)
        self._batched.set_batch_wait_timeout_s(batching["batch_wait_timeout_s"])

    def info(self) -> dict[str, Any]:
        return {"name": self.entry["name"], "version": self.entry["version"], "task": "speech",
                "path": self.entry["path"], "sample_rate": self.model.features.sample_rate,
                "max_seconds": self.model.max_seconds, "batches": self.batches,
                "batched_requests": self.batched_requests}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _batched(self, waves: list[Any]) -> list[str]:
        model = self.model
        self.batches += 1
        self.batched_requests += len(waves)
        return await asyncio.to_thread(model.transcribe, waves)

    async def transcribe(self, audio: bytes) -> dict[str, Any]:
        """{"text", "duration", "version"} or {"error": message} for audio that cannot be used."""
        from lmstack.tasks.speech.audio import AudioReject

        model, version = self.model, self.entry["version"]
        try:
            # Silence is a valid request (its transcript is empty); unreadable/empty/too long are not.
            wave = await asyncio.to_thread(model.read, audio, False)
        except AudioReject as rej:
            return {"error": f"file: {rej.reason.replace('_', ' ')}: {rej.detail}"}
        text = await self._batched(wave)
        return {"text": text, "duration": len(wave) / model.features.sample_rate, "version": version}


def _keep_audio(feedback_dir: str, rid: str, filename: str, data: bytes) -> str:
    ext = os.path.splitext(filename or "")[1].lower()
    folder = os.path.join(feedback_dir, "audio")
    os.makedirs(folder, exist_ok=True)
    path = os.path.abspath(os.path.join(folder, rid + (ext if ext.isascii() and len(ext) <= 6 else "")))
    with open(path, "wb") as f:
        f.write(data)
    return path


def _form_str(form: Any, key: str, ctx: Any, required: bool = False, default: str | None = None) -> str | None:
    value = form.get(key)
    if value is None or value == "":
        if required:
            ctx.fail(400, f"{key}: field required", param=key)
        return default
    if not isinstance(value, str):
        ctx.fail(400, f"{key}: must be a form field, not a file", param=key)
    if len(value) > 4096:
        ctx.fail(400, f"{key}: longer than 4096 characters", param=key)
    return value


def add_routes(app: FastAPI, ctx: Any) -> None:
    from starlette.datastructures import UploadFile

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        if not request.headers.get("content-type", "").startswith(("multipart/form-data",
                                                                   "application/x-www-form-urlencoded")):
            ctx.fail(400, "the body must be multipart/form-data with `file` (the audio) and `model`")
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as err:  # noqa: BLE001 - Starlette raises several types for a malformed form
            ctx.fail(400, f"a multipart/form-data body with `file` and `model` is required ({err})")
        name = _form_str(form, "model", ctx, required=True)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            ctx.fail(400, "file: an audio file upload is required", param="file")
        fmt = _form_str(form, "response_format", ctx, default="json")
        if fmt not in FORMATS:
            hint = " (no timestamps: this is a CTC character model)" if fmt in UNSUPPORTED_FORMATS else ""
            ctx.fail(400, f"response_format: {fmt!r} is not supported{hint}; use one of {list(FORMATS)}",
                     param="response_format")
        language = _form_str(form, "language", ctx)
        handle = ctx.model(name, "speech")
        data = await upload.read()
        if not data:
            ctx.fail(400, "file: the upload is empty", param="file")
        if len(data) > ctx.limits.max_body_bytes:
            ctx.fail(413, f"file: over {ctx.limits.max_body_bytes} bytes", param="file")
        res = await handle.transcribe.remote(data)
        if "error" in res:
            ctx.fail(400, res["error"], param="file")
        rid = ctx.new_request_id("stt")
        if ctx.settings.log_requests:
            kept = await asyncio.to_thread(_keep_audio, ctx.settings.feedback_dir, rid, upload.filename, data)
            await asyncio.to_thread(ctx.store.log_completion, rid, name, res["version"], ENDPOINT,
                                    json.dumps({"audio": kept, "filename": upload.filename}, ensure_ascii=False),
                                    json.dumps(res["text"], ensure_ascii=False),
                                    {"language": language, "response_format": fmt})
        # The id /v1/feedback takes; also a header, since response_format text has no body to carry it
        # (not x-request-id: Ray Serve sets that one itself).
        headers = {"x-lmstack-request-id": rid}
        if fmt == "text":
            return PlainTextResponse(res["text"] + "\n", headers=headers)
        body: dict[str, Any] = {"text": res["text"], "id": rid, "model": name, "version": res["version"]}
        if fmt == "verbose_json":
            duration = round(res["duration"], 3)
            body.update(task="transcribe", language=language or "english", duration=duration, segments=[{
                "id": 0, "seek": 0, "start": 0.0, "end": duration, "text": res["text"], "tokens": [],
                "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 1.0, "no_speech_prob": 0.0}])
        return JSONResponse(body, headers=headers)


SERVING = ServingTask(name="speech", deployment=Transcriber, add_routes=add_routes)

__all__ = ["SERVING", "Transcriber", "add_routes"]
