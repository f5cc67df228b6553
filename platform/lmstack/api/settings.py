"""What one Serve application serves and how: pydantic models, validated before anything deploys."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmstack.artifacts import MODEL_MANIFEST

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Batching(Section):
    enabled: bool = True
    max_batch_size: int = Field(8, ge=1, le=256)
    # A CPU decode batch takes seconds: waiting 50 ms for more requests fills batches (measured: mean
    # batch 6.3 vs 1.9 at 5 ms, 3.6x the unbatched throughput vs 1.7x) at no cost to p99.
    batch_wait_timeout_s: float = Field(0.05, ge=0, le=5)


class Autoscaling(Section):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("autoscaling.max_replicas must be >= min_replicas")
        return self


class ModelEntry(Section):
    name: str
    path: str
    version: str | None = None  # default: the directory's lmstack_model.json step, else "1"
    task: str | None = None  # default: lmstack_model.json's task, else "lm"
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    batching: Batching = Batching()
    autoscaling: Autoscaling = Autoscaling()
    max_ongoing_requests: int | None = Field(None, ge=1)  # default: max(16, 2 * max_batch_size)

    @model_validator(mode="after")
    def _check(self) -> ModelEntry:
        if not NAME.match(self.name):
            raise ValueError(f"model name {self.name!r}: letters, digits, . _ - only (max 64)")
        return self

    def resolved(self) -> ModelEntry:
        """Fill task/version from the model directory's manifest (the export's lineage)."""
        manifest = read_manifest(self.path)
        task = self.task or manifest.get("task") or "lm"
        version = self.version or str(manifest.get("version") or manifest.get("steps") or "1")
        return self.model_copy(update={"task": task, "version": version})

    def ongoing_limit(self) -> int:
        # Serve's default of 5 ongoing requests silently caps a batch at 5 (RAY_NOTES.md).
        return self.max_ongoing_requests or max(16, 2 * self.batching.max_batch_size)


class Limits(Section):
    max_body_bytes: int = Field(1 << 20, ge=1024)
    max_prompt_chars: int = Field(32_768, ge=1)
    max_tokens: int = Field(1024, ge=1)
    max_messages: int = Field(256, ge=1)
    # One request's decoding work: inputs x beams x new tokens (256 x 16 x 512 would hold a replica for
    # minutes); over it is a 400 naming the product.
    max_decode_tokens: int = Field(65_536, ge=1)
    # Requests waiting for a model replica beyond its ongoing ones; more are refused at once with 503
    # (and Retry-After) instead of queueing without limit.
    max_queued_requests: int = Field(64, ge=1)


class ServeSettings(Section):
    models: list[ModelEntry] = Field(min_length=1)
    api_key: str | None = None  # else LMSTACK_API_KEY; None and unset: no authentication
    # What replicas receive instead of the key (build_app fills it from the key where the app is built):
    # the key reaches ingress replicas on every node, and Serve's config and dashboard never show it.
    api_key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    # The address Serve's HTTP proxy binds (http_options.host). Not a loopback address and no key: refused,
    # unless `insecure` says an open endpoint is intended.
    http_host: str = "127.0.0.1"
    insecure: bool = False
    # Stored prompts/completions older than this are deleted when an ingress replica starts (None: kept).
    retention_days: float | None = Field(None, gt=0)
    feedback_dir: str = "runs/serve"
    log_requests: bool = True  # keep prompts/completions so feedback can point at them
    access_log: bool = True  # Serve's per-request log lines (off: less CPU per request)
    limits: Limits = Limits()
    ingress_replicas: int = Field(1, ge=1)
    ingress_cpus: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _unique(self) -> ServeSettings:
        names = [m.name for m in self.models]
        if len(names) != len(set(names)):
            raise ValueError(f"model names must be unique, got {names}")
        return self

    def resolved_api_key(self) -> str | None:
        return self.api_key or os.environ.get("LMSTACK_API_KEY") or None

    def key_digest(self) -> str | None:
        """The SHA-256 of the API key (given as a digest, or from the key): what the ingress checks."""
        key = self.resolved_api_key()
        return self.api_key_sha256 or (hashlib.sha256(key.encode()).hexdigest() if key else None)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def read_manifest(model_dir: str) -> dict:
    path = os.path.join(model_dir, MODEL_MANIFEST)
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def default_name(model_dir: str) -> str:
    """`runs/shakespeare/model` -> `shakespeare`: the export's directory is always called `model`."""
    path = os.path.abspath(model_dir).rstrip("/")
    base = os.path.basename(path)
    if base == "model":
        base = os.path.basename(os.path.dirname(path))
    return re.sub(r"[^A-Za-z0-9._-]", "-", base)[:64] or "model"
