"""Registered population models as users come and go: derive a new version from the serving
one with a changed directory (a P_u row added or removed), make it the champion, and
(for `--purge-history`) delete earlier versions together with their runs and artifacts."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from components.storage.state import make_temporary

log = logging.getLogger(__name__)


def population_models(kind: str, task: str) -> list[str]:
    """Registered `<kind>-<task>-<population>` model names."""
    import mlflow

    prefix = f"{kind}-{task}-"
    return sorted(m.name for m in mlflow.MlflowClient().search_registered_models(f"name LIKE '{prefix}%'"))


def population_dir(name: str, version: str, dest: Path) -> Path:
    """A registered population model version's directory (downloaded into `dest`)."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest)))
    return local / "artifacts" / "population"


def derive_version(kind: str, name: str, change: Callable[[Path], object], note: str,
                   repo: str | Path = ".") -> dict | None:
    """Apply `change(directory)` to the serving version of `name`; if it returns something
    truthy, register the changed directory as a new version and make it the champion (the
    decision names the version it derives from). Returns the registration, or None."""
    import mlflow

    from components.methods.populations import register_population_model, serving_version
    from components.tracking.registry import install

    client = mlflow.MlflowClient()
    base = serving_version(name)
    source = client.get_model_version(name, base)
    work = make_temporary("derive", repo)
    try:
        directory = population_dir(name, base, work / "download")
        result = change(directory)
        if not result:
            return None
        task, population = name.removeprefix(f"{kind}-").rsplit("-", 1)      # <kind>-<task>-<population>
        promotion_tags = {k: source.tags[k] for k in ("task", "validation_metrics", "validation_split")
                          if k in source.tags}                           # what promotion reads
        reg = register_population_model(kind, task, population, lambda d: shutil.copytree(directory, d),
                                        source.tags["backbone"], {"derived_from": base, "change": note}, {}, [],
                                        source.tags.get("params_hash", ""), repo,
                                        version_tags={**promotion_tags, "derived_from": base})
        install(name, reg["version"], f"promoted: {note} (derived from version {base}; other users unchanged)")
        log.info("%s: version %s (%s) is the champion", name, reg["version"], note)
        return {**reg, "derived_from": base, "result": result}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def versions_holding(name: str, contains: Callable[[Path], bool], skip: set[str], repo: str | Path = ".") -> list[str]:
    """The versions of `name` (other than `skip`) whose directory `contains` says yes to."""
    import mlflow

    found = []
    work = make_temporary("scan", repo)
    try:
        for v in mlflow.MlflowClient().search_model_versions(f"name='{name}'"):
            if str(v.version) in skip:
                continue
            if contains(population_dir(name, str(v.version), work / str(v.version))):
                found.append(str(v.version))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sorted(found, key=int)


def purge_versions(name: str, versions: list[str]) -> list[str]:
    """Delete model versions with their logged models and runs: first their artifacts, through
    the artifact store itself (a folder, S3, or a tracking server's proxied store), then the
    entities; a database the platform reaches directly (SQLite, or any SQL store) is then
    garbage-collected (`mlflow gc`) and compacted. Behind a tracking server, the deleted
    entities' rows (names, tags and metrics, no user data) wait for the server's own `mlflow gc`."""
    import mlflow

    client = mlflow.MlflowClient()
    runs, models = [], []
    for version in versions:
        v = client.get_model_version(name, version)
        model_id = logged_model_id(v)
        if model_id:
            delete_artifacts(client.get_logged_model(model_id).artifact_location)
        if v.run_id:
            delete_artifacts(client.get_run(v.run_id).info.artifact_uri)
        client.delete_model_version(name, version)
        if model_id:
            client.delete_logged_model(model_id)
            models.append(model_id)
        if v.run_id:
            client.delete_run(v.run_id)
            runs.append(v.run_id)
    if (runs or models) and not mlflow.get_tracking_uri().startswith(("http://", "https://", "databricks")):
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow", "gc",
               "--backend-store-uri", mlflow.get_tracking_uri()]
        if runs:
            cmd += ["--run-ids", ",".join(runs)]
        if models:
            cmd += ["--logged-model-ids", ",".join(models)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"mlflow gc failed for {name} versions {versions}: {proc.stderr[-2000:]}")
        compact_sqlite_store(mlflow.get_tracking_uri())
    return [f"{name}/{v}" for v in versions]


def delete_artifacts(uri: str) -> None:
    """Delete everything under an artifact URI, in whatever store holds it."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        get_artifact_repository(uri).delete_artifacts()
    except FileNotFoundError:
        pass


def logged_model_id(version) -> str | None:
    """The logged model behind a registered version: its `model_id` where the store fills it
    in, else the `models:/m-…` source it was registered from (SQL stores leave `model_id`
    empty)."""
    if version.model_id:
        return version.model_id
    source = version.source or ""
    if source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/")[0]
    return None


def compact_sqlite_store(uri: str) -> None:
    """Rewrite a local SQLite tracking database so deleted rows leave no bytes behind in its
    free pages (`VACUUM`); other stores are left to their own housekeeping."""
    import sqlite3
    from contextlib import closing

    if uri.startswith("sqlite:///"):
        with closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db:
            db.execute("VACUUM")


def users_in_dir(directory: Path) -> set[str]:
    meta = directory / "users.json"
    return set(json.loads(meta.read_text())["users"]) if meta.exists() else set()
