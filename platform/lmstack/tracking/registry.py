"""The model registry (MLflow's): a registered model's versions point at exported model directories
(the run's `model` artifact), carry the run's lineage as tags, and aliases (production, staging) pick
the version that `lmstack serve models:/NAME@ALIAS` serves."""

from __future__ import annotations

import os
from typing import Any

from lmstack import runtime
from lmstack.artifacts import MODEL_MANIFEST
from lmstack.tracking import mlflow_log
from lmstack.tracking.lineage import load_run

LINEAGE_TAGS = ("task", "strategy", "recipe", "recipe_hash", "data_manifest", "data_manifest_hash", "git_commit",
                mlflow_log.RUN_DIR_TAG)


def default_store() -> str:
    """MLFLOW_TRACKING_URI, else runs/mlruns in the current directory (where runs go by default)."""
    return mlflow_log.store_uri(os.environ.get("MLFLOW_TRACKING_URI") or os.path.join("runs", "mlruns"))


def run_store(run_dir: str) -> str:
    """The store a run directory's runs were logged to: its recipe's tracking.uri, else the default
    next to it (<runs root>/mlruns), else MLFLOW_TRACKING_URI."""
    recipe = load_run(run_dir).recipe or {}
    uri = (recipe.get("tracking") or {}).get("uri")
    return mlflow_log.store_uri(uri or mlflow_log.default_location(run_dir))


def register(run_dir: str, name: str, uri: str | None = None) -> dict[str, Any]:
    """A new version of `name` pointing at the run's exported model (the run is logged first when the
    store has no run for it, e.g. it ran with tracking off)."""
    from mlflow.exceptions import MlflowException

    run = load_run(run_dir)
    if run.model_dir is None:
        raise FileNotFoundError(f"{run_dir}: the run exported no model (summary.json has no model_dir with "
                                f"{MODEL_MANIFEST})")
    uri = uri or run_store(run_dir)
    c = mlflow_log.client(uri)
    found = mlflow_log.find_run(uri, run_dir)
    if found is None:
        rid = mlflow_log.log_run(uri, run_dir)
        found = c.get_run(rid)
    has_model = any(f.path == "model" for f in c.list_artifacts(found.info.run_id))
    source = f"{found.info.artifact_uri}/model" if has_model else os.path.abspath(run.model_dir)
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(name, description="registered with lmstack models register")
    tags = {k: v for k, v in found.data.tags.items() if k in LINEAGE_TAGS}
    version = c.create_model_version(name, source=source, run_id=found.info.run_id, tags=tags,
                                     description=f"lmstack run {run_dir}")
    return {"name": name, "version": int(version.version), "source": source, "run_id": found.info.run_id,
            "store": uri, **tags}


def _version_row(v) -> dict[str, Any]:
    return {"version": int(v.version), "aliases": list(getattr(v, "aliases", []) or []), "source": v.source,
            "run_id": v.run_id, **{k: t for k, t in (v.tags or {}).items() if k in LINEAGE_TAGS}}


def list_models(uri: str | None = None) -> list[dict[str, Any]]:
    c = mlflow_log.client(uri or default_store())
    out = []
    for m in c.search_registered_models():
        versions = c.search_model_versions(f"name = '{m.name}'")
        out.append({"name": m.name, "versions": len(versions),
                    "latest": max((int(v.version) for v in versions), default=None),
                    "aliases": {a: int(v) for a, v in (m.aliases or {}).items()}})
    return out


def show_model(name: str, uri: str | None = None) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    c = mlflow_log.client(uri or default_store())
    try:
        m = c.get_registered_model(name)
    except MlflowException:
        raise FileNotFoundError(f"models: no registered model {name!r} in {uri or default_store()}") from None
    versions = sorted(c.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    return {"name": name, "aliases": {a: int(v) for a, v in (m.aliases or {}).items()}, "versions": [_version_row(v) for v in versions]}


def promote(name: str, version: int, alias: str = "production", uri: str | None = None) -> dict[str, Any]:
    """Point `alias` at `version`: `lmstack serve models:/NAME@ALIAS` serves it, and a server already
    following that reference swaps to it at its next poll (--registry-poll-s)."""
    from mlflow.exceptions import MlflowException

    c = mlflow_log.client(uri or default_store())
    try:
        c.get_model_version(name, str(version))
    except MlflowException:
        raise FileNotFoundError(f"models: {name!r} has no version {version}") from None
    c.set_registered_model_alias(name, alias, str(version))
    return {"name": name, "alias": alias, "version": int(version)}


def is_model_uri(path: str) -> bool:
    return path.startswith("models:/")


def resolve(model_uri: str, uri: str | None = None) -> tuple[str, str, str]:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> (local model directory, NAME, version)."""
    from mlflow.exceptions import MlflowException

    c = mlflow_log.client(uri or default_store())
    ref = model_uri.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            v = c.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.rsplit("/", 1)
            v = c.get_model_version(name, number)
    except (MlflowException, ValueError):
        raise FileNotFoundError(f"{model_uri}: no such model version in {uri or default_store()} "
                                f"(see `lmstack models list`)") from None
    return local_copy(v.source, name, v.version, uri or default_store()), name, str(v.version)


def local_copy(source: str, name: str, version: str, uri: str) -> str:
    """A local directory with the version's files: the artifact itself when the store is local, else a
    download kept under the store's downloads/ (versions never change, so one download serves)."""
    if source.startswith("file://"):
        return source.removeprefix("file://")
    if "://" not in source:
        return source
    import mlflow.artifacts

    base = os.path.dirname(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else "runs/mlruns"
    dest = os.path.join(base, "downloads", name, str(version))
    if not runtime.exists(os.path.join(dest, "model", MODEL_MANIFEST)):
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=dest, tracking_uri=uri)
    return os.path.join(dest, "model")


def moved(served: dict[str, tuple[str, str]], uri: str | None = None) -> list[tuple[str, str, str]]:
    """The served models whose registry reference now names another version (an alias promoted):
    `served` maps a served name to (models:/ reference, version served); returns (name, directory,
    version) for each that moved, for the server's version swap."""
    out = []
    for name, (ref, version) in served.items():
        path, _, now = resolve(ref, uri)
        if now != version:
            out.append((name, path, now))
    return out
