"""Serving verbs: `lmstack serve MODEL_DIR...` and `lmstack feedback export`."""

from __future__ import annotations

import argparse

from lmstack import runtime
from lmstack.cli.common import add_verb, connect, print_json


def cmd_serve(args: argparse.Namespace) -> None:
    import time

    from pydantic import ValidationError
    from ray import serve

    from lmstack.api.settings import ServeSettings, default_name
    from lmstack.serve.app import APP_NAME, InsecureBindError, check_bind, deploy

    names = args.name or []
    if len(names) > len(args.models):
        raise SystemExit("lmstack serve: error: more --name than model directories")
    models = []
    registry = None  # the store that models:/ references resolve through
    followed: dict[str, tuple[str, str]] = {}  # served name -> (models:/ reference, version served)
    for i, path in enumerate(args.models):
        name, version = names[i] if i < len(names) else None, None
        if path.startswith("models:/"):  # a registry reference: its alias or version picks the directory
            from lmstack.tracking.mlflow_log import store_uri
            from lmstack.tracking.registry import resolve

            registry = args.tracking_uri and store_uri(args.tracking_uri)
            ref = path
            path, registered, version = resolve(ref, registry)
            name = name or registered
            followed[name] = (ref, version)
        models.append({"name": name or default_name(path), "path": path,
                       **({"version": version} if version else {}), "num_cpus": args.num_cpus, "num_gpus": args.num_gpus,
                       "batching": {"enabled": args.max_batch_size > 1, "max_batch_size": args.max_batch_size,
                                    "batch_wait_timeout_s": args.batch_wait_timeout_s}})
    try:
        settings = ServeSettings.model_validate({"models": models, "api_key": args.api_key,
                                                 "feedback_dir": args.feedback_dir, "http_host": args.host,
                                                 "insecure": args.insecure})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SystemExit(f"lmstack serve: error: {where}: {first['msg']}") from None
    try:
        routes = check_bind(settings)  # before any cluster starts
    except InsecureBindError as err:
        raise SystemExit(f"lmstack serve: error: {err}") from None
    connect(args)
    runtime.connect()
    deploy(settings, port=args.port, host=args.host)
    served = ", ".join(m["name"] for m in models)
    print(f"serving {served} on http://{args.host}:{args.port}/v1 (OpenAI-compatible); {routes}; Ctrl-C stops",
          flush=True)
    try:
        while True:
            time.sleep(args.registry_poll_s if followed else 3600)
            if followed:
                settings = _follow_registry(settings, followed, registry)
    except KeyboardInterrupt:
        serve.delete(APP_NAME)


def _follow_registry(settings, followed: dict[str, tuple[str, str]], registry: str | None):
    """A promotion (`lmstack models promote NAME V --alias A`) of a served models:/NAME@A swaps the served
    weights through Serve's version swap: no restart, requests keep flowing."""
    from lmstack.serve.app import swap_model
    from lmstack.tracking.registry import moved

    for name, path, version in moved(followed, registry):
        settings = swap_model(settings, name, path, version)
        followed[name] = (followed[name][0], version)
        print(f"{name}: now serving version {version} ({path})", flush=True)
    return settings


def cmd_feedback_export(args: argparse.Namespace) -> None:
    from lmstack.serve.feedback import export

    print_json(export(args.feedback_dir, args.output, args.format, args.min_rating))


def register(verbs) -> None:
    p = add_verb(verbs, "serve", cmd_serve, "serve exported models over HTTP on Ray Serve (OpenAI-compatible)",
                 recipe=False)
    p.add_argument("models", nargs="+", metavar="MODEL_DIR",
                   help="exported model directories, or registry references models:/NAME@ALIAS, models:/NAME/VERSION")
    p.add_argument("--tracking-uri", help="registry store for models:/ references (default: MLFLOW_TRACKING_URI, "
                   "else runs/mlruns)")
    p.add_argument("--registry-poll-s", type=float, default=15.0,
                   help="how often a models:/NAME@ALIAS reference is resolved again (a promotion swaps the model)")
    p.add_argument("--name", action="append", help="model name, once per MODEL_DIR in order (default: run name)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address; one other machines reach needs an API key, or --insecure")
    p.add_argument("--insecure", action="store_true",
                   help="serve with no API key on a non-loopback --host (every route open to the network)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: LMSTACK_API_KEY, else none)")
    p.add_argument("--feedback-dir", default="runs/serve", help="where feedback.sqlite lives")
    p.add_argument("--max-batch-size", type=int, default=8, help="dynamic batch size per replica (1: no batching)")
    p.add_argument("--batch-wait-timeout-s", type=float, default=0.01)
    p.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per model replica")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per model replica")
    fb = verbs.add_parser("feedback", help="feedback recorded by the server").add_subparsers(
        dest="feedback_verb", required=True)
    ex = fb.add_parser("export", help="write feedback as a dataset a recipe can read (JSONL or Parquet)")
    ex.add_argument("--feedback-dir", default="runs/serve")
    ex.add_argument("--output", "-o", required=True, help="output file (.jsonl or .parquet)")
    ex.add_argument("--format", choices=["jsonl", "parquet"], help="default: from the output's suffix")
    ex.add_argument("--min-rating", type=float, help="keep rows rated at least this (corrections always kept)")
    ex.set_defaults(fn=cmd_feedback_export)
