"""Request bodies: pydantic models with size limits, so bad input is a 4xx before it reaches a model.

Unknown fields are ignored (the OpenAI client sends fields lmstack does not use), but every field
lmstack reads is bounded. Limits beyond these static ones (prompt length, max_tokens) come from
the application's settings and are checked in `check_limits`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lmstack.api.settings import Limits

MAX_STOP = 4
MAX_STOP_CHARS = 64


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", str_max_length=1 << 20)


class Sampling(Body):
    model: str = Field(min_length=1, max_length=128)
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)  # one choice per request keeps batching simple
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    user: str | None = Field(None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"stop sequences must be 1..{MAX_STOP_CHARS} characters")
        return stops

    def stops(self) -> list[str]:
        return self.stop or []  # type: ignore[return-value]


class CompletionRequest(Sampling):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("prompt: one string (or a list holding exactly one)")
            v = v[0]
        return v


class ChatMessage(Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


class TextsRequest(Body):
    """A task request over one text or a list of them (/v1/classify, /v1/translate)."""

    max_inputs: ClassVar[int] = 256
    model: str = Field(min_length=1, max_length=128)
    input: str | list[str]
    user: str | None = Field(None, max_length=256)

    @field_validator("input")
    @classmethod
    def _some_input(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("give a string or a non-empty list of strings")
        return v

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def problem(self, limits: Limits) -> str | None:
        """The first input limit the request breaks, as a message for a 400; None when it fits."""
        texts = self.texts()
        if len(texts) > self.max_inputs:
            return f"{len(texts)} inputs; the limit is {self.max_inputs}"
        for i, text in enumerate(texts):
            if not text.strip():
                return f"input[{i}] is empty"
            if len(text) > limits.max_prompt_chars:
                return f"input[{i}] is {len(text)} characters; the limit is {limits.max_prompt_chars}"
        return None


class FeedbackRequest(Body):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=128)
    rating: float | None = Field(None, ge=-1, le=5)
    correction: str | None = Field(None, max_length=32_768)
    comment: str | None = Field(None, max_length=4096)
    user: str | None = Field(None, max_length=256)

    @field_validator("correction", "comment")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        return v if v is None or v.strip() else None


def check_limits(req: Sampling, prompt: str, limits: Limits) -> str | None:
    """The first limit `req` breaks, as a message for a 400/413; None when it fits."""
    if len(prompt) > limits.max_prompt_chars:
        return f"prompt is {len(prompt)} characters; the limit is {limits.max_prompt_chars}"
    if req.max_tokens > limits.max_tokens:
        return f"max_tokens is {req.max_tokens}; the limit is {limits.max_tokens}"
    if isinstance(req, ChatRequest) and len(req.messages) > limits.max_messages:
        return f"{len(req.messages)} messages; the limit is {limits.max_messages}"
    return None


def chat_prompt(messages: list[ChatMessage]) -> str:
    """A plain-text transcript: lmstack's pretrained models have no chat template, so the model
    continues after 'assistant:'. A tokenizer with a chat template would be used instead."""
    lines = [f"{m.role}: {m.content}" for m in messages]
    return "\n".join(lines) + "\nassistant:"
