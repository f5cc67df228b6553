"""Reports and tracking verbs: `lmstack report`, `lmstack runs`, `lmstack models`, `lmstack ui mlflow`."""

from __future__ import annotations

import argparse
import os

from lmstack.cli.common import print_json


def _store(args: argparse.Namespace) -> str:
    from lmstack.tracking.mlflow_log import store_uri
    from lmstack.tracking.registry import default_store

    return store_uri(args.tracking_uri) if args.tracking_uri else default_store()


def cmd_report(args: argparse.Namespace) -> None:
    from lmstack.tracking.report import write_comparison, write_report

    if len(args.runs) == 1 and not args.output:
        print(write_report(args.runs[0]))
        return
    out = args.output or "comparison.html"
    print(write_comparison(args.runs, out))


def cmd_runs_list(args: argparse.Namespace) -> None:
    from lmstack.tracking.runs import format_rows, list_runs

    print(format_rows(list_runs(_store(args), root=args.root, limit=args.limit)))


def cmd_runs_show(args: argparse.Namespace) -> None:
    from lmstack.tracking.runs import show_run

    print_json(show_run(args.run, _store(args)))


def cmd_runs_compare(args: argparse.Namespace) -> None:
    from lmstack.tracking.runs import compare_runs

    print(compare_runs(args.runs, _store(args), args.output))


def cmd_models_register(args: argparse.Namespace) -> None:
    from lmstack.tracking.mlflow_log import store_uri
    from lmstack.tracking.registry import register

    print_json(register(args.run_dir, args.name, store_uri(args.tracking_uri) if args.tracking_uri else None))


def cmd_models_list(args: argparse.Namespace) -> None:
    from lmstack.tracking.registry import list_models

    print_json(list_models(_store(args)))


def cmd_models_show(args: argparse.Namespace) -> None:
    from lmstack.tracking.registry import show_model

    print_json(show_model(args.name, _store(args)))


def cmd_models_promote(args: argparse.Namespace) -> None:
    from lmstack.tracking.registry import promote

    print_json(promote(args.name, args.version, args.alias, _store(args)))


def cmd_ui_mlflow(args: argparse.Namespace) -> None:
    """Replace this process with `mlflow ui` on the store (its PID is this command's PID)."""
    import shutil
    import sys

    uri = _store(args)
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or shutil.which("mlflow")
    if mlflow is None:
        raise FileNotFoundError("ui mlflow: the `mlflow` command is not installed (pip install mlflow)")
    argv = [mlflow, "ui", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port),
            "--workers", str(args.workers)]
    # A viewer of local runs needs no background job runner (MLflow's GenAI jobs: a handful of processes).
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if uri.startswith("sqlite:///"):  # serve the artifacts the runs logged beside the database
        argv += ["--default-artifact-root", "file://" + os.path.join(os.path.dirname(uri.removeprefix(
            "sqlite:///")), "artifacts")]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C stops", flush=True)
    os.execv(mlflow, argv)


def _store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", help="tracking store (default: MLFLOW_TRACKING_URI, else runs/mlruns)")


def register(verbs) -> None:
    p = verbs.add_parser("report", help="build a run's report.html again, or one page comparing runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("-o", "--output", help="comparison page path (default: comparison.html)")
    p.set_defaults(fn=cmd_report)

    runs = verbs.add_parser("runs", help="past runs (the tracking store, or run directories)").add_subparsers(
        dest="runs_verb", required=True)
    p = runs.add_parser("list", help="runs, newest first")
    _store_option(p)
    p.add_argument("--root", default="runs", help="where run directories are when no store has runs")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(fn=cmd_runs_list)
    p = runs.add_parser("show", help="one run's params, metrics and tags (a run id or a run directory)")
    _store_option(p)
    p.add_argument("run")
    p.set_defaults(fn=cmd_runs_show)
    p = runs.add_parser("compare", help="one comparison page for several runs (ids or directories)")
    _store_option(p)
    p.add_argument("runs", nargs="+")
    p.add_argument("-o", "--output", default="comparison.html")
    p.set_defaults(fn=cmd_runs_compare)

    models = verbs.add_parser("models", help="the model registry (MLflow)").add_subparsers(
        dest="models_verb", required=True)
    p = models.add_parser("register", help="a new version of NAME pointing at the run's exported model")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--name", required=True)
    p.add_argument("--tracking-uri", help="tracking store (default: the run's recipe's, else next to the run)")
    p.set_defaults(fn=cmd_models_register)
    p = models.add_parser("list", help="registered models")
    _store_option(p)
    p.set_defaults(fn=cmd_models_list)
    p = models.add_parser("show", help="a registered model's versions, lineage and aliases")
    _store_option(p)
    p.add_argument("name")
    p.set_defaults(fn=cmd_models_show)
    p = models.add_parser("promote", help="point an alias (default production) at a version")
    _store_option(p)
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--alias", default="production")
    p.set_defaults(fn=cmd_models_promote)

    ui = verbs.add_parser("ui", help="web UIs").add_subparsers(dest="ui_verb", required=True)
    p = ui.add_parser("mlflow", help="the MLflow UI on the tracking store")
    _store_option(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.set_defaults(fn=cmd_ui_mlflow)
