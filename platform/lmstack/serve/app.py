"""Build the Serve application from settings; deploy, swap versions, shut down."""

from __future__ import annotations

import hashlib
import inspect
import os
from typing import Any

from ray import serve

from lmstack.api.settings import ModelEntry, ServeSettings, is_loopback
from lmstack.serve.ingress import OPEN_PATHS, Ingress
from lmstack.tasks import get_spec

APP_NAME = "lmstack"


def _code_version(*parts: Any) -> str:
    """A stable Serve version for a deployment: its code and its options. Without one, every
    `serve.run` restarts every replica (Serve picks a random version); with it, a change of
    `user_config` alone (a model version swap) reconfigures the running replicas in place."""
    h = hashlib.sha256()
    for part in parts:
        h.update(inspect.getsource(part).encode() if inspect.isclass(part) else repr(part).encode())
    return h.hexdigest()[:16]


def _logging(settings: ServeSettings) -> dict[str, Any]:
    return {"enable_access_log": settings.access_log}


def _model_deployment(entry: ModelEntry, settings: ServeSettings) -> Any:
    task = get_spec(entry.task or "lm").serving()
    options: dict[str, Any] = {
        "name": f"{entry.task}-{entry.name}",
        "logging_config": _logging(settings),
        "ray_actor_options": {"num_cpus": entry.num_cpus, "num_gpus": entry.num_gpus},
        "max_ongoing_requests": entry.ongoing_limit(),
        "max_queued_requests": settings.limits.max_queued_requests,
        "user_config": entry.model_dump(),
    }
    scale = entry.autoscaling
    if scale.min_replicas == scale.max_replicas:
        options["num_replicas"] = scale.min_replicas
    else:
        options["autoscaling_config"] = {"min_replicas": scale.min_replicas, "max_replicas": scale.max_replicas,
                                         "target_ongoing_requests": scale.target_ongoing_requests}
    version = _code_version(task.deployment.func_or_class, {k: v for k, v in options.items() if k != "user_config"})
    return task.deployment.options(**options, version=version, _internal=True)


class InsecureBindError(ValueError):
    """Serving on an address other machines reach, with no API key and no explicit `insecure`."""


def check_bind(settings: ServeSettings) -> str:
    """Refuse an open endpoint on a reachable address; returns the line that says which routes are open."""
    if settings.key_digest() is not None:
        return f"API key required on every route except {', '.join(sorted(OPEN_PATHS))}"
    if not is_loopback(settings.http_host) and not settings.insecure:
        raise InsecureBindError(
            f"serving on {settings.http_host} (reachable from other machines) with no API key: set api_key or "
            "LMSTACK_API_KEY where the application is built, or pass --insecure (insecure: true) to serve open")
    return "no API key: every route is open" + ("" if is_loopback(settings.http_host) else " to the network")


def ingress_args(settings: ServeSettings) -> dict[str, Any]:
    """What the ingress deployment is bound with: no model paths or versions (a version swap leaves it
    running) and no API key, only its digest (the key reaches replicas on every node; Serve's config and
    dashboard, which show these arguments, never show the key)."""
    args = settings.model_dump()
    args["api_key"], args["api_key_sha256"] = None, settings.key_digest()
    for m in args["models"]:
        m["path"], m["version"] = "", ""
    return args


def build_app(settings: ServeSettings | dict[str, Any]) -> Any:
    """The Serve application: an ingress and one deployment per model (`serve.run(build_app(...))`)."""
    if not isinstance(settings, ServeSettings):
        settings = ServeSettings.model_validate(settings)
    check_bind(settings)
    entries = [m.resolved().model_copy(update={"path": os.path.abspath(m.path)}) for m in settings.models]
    for entry in entries:
        if not os.path.isdir(entry.path):
            raise FileNotFoundError(f"model directory {entry.path!r} does not exist")
    settings = settings.model_copy(update={
        "models": entries, "feedback_dir": os.path.abspath(settings.feedback_dir)})
    handles = {e.name: _model_deployment(e, settings).bind() for e in entries}
    tasks = {e.name: str(e.task) for e in entries}
    ingress_settings = ingress_args(settings)
    # Every ingress replica on the head node: feedback.sqlite is a local file, so replicas spread over
    # nodes would each see only their own node's requests (a feedback answered 404 on another node).
    ingress = serve.deployment(Ingress).options(
        name="ingress", num_replicas=settings.ingress_replicas, max_ongoing_requests=1000,
        logging_config=_logging(settings),
        ray_actor_options={"num_cpus": settings.ingress_cpus, "resources": {"node:__internal_head__": 0.001}})
    ingress = ingress.options(version=_code_version(Ingress, ingress_settings, tasks), _internal=True)
    return ingress.bind(ingress_settings, handles, tasks)


def deploy(settings: ServeSettings | dict[str, Any], port: int = 8000, host: str = "127.0.0.1",
           name: str = APP_NAME, blocking: bool = False) -> Any:
    """Start Serve's HTTP proxy on host:port (first call only) and deploy; returns the ingress handle.
    A non-loopback host with no API key is refused before anything starts (unless settings.insecure)."""
    if not isinstance(settings, ServeSettings):
        settings = ServeSettings.model_validate(settings)
    settings = settings.model_copy(update={"http_host": host})
    check_bind(settings)
    serve.start(http_options={"host": host, "port": port})
    return serve.run(build_app(settings), name=name, route_prefix="/", blocking=blocking)


def swap_model(settings: ServeSettings, model: str, path: str, version: str, name: str = APP_NAME) -> ServeSettings:
    """Serve `path` as `version` of `model`; requests keep flowing (see LanguageModel.reconfigure)."""
    entries = [m.model_copy(update={"path": path, "version": version}) if m.name == model else m
               for m in settings.models]
    if not any(m.name == model for m in settings.models):
        raise ValueError(f"no model named {model!r} in this application")
    new = settings.model_copy(update={"models": entries})
    serve.run(build_app(new), name=name, route_prefix="/")
    return new
