"""Registered population models as users come and go: derive a new version from the serving
one with a changed directory (a P_u row added or removed), make it the champion, and
(for `--purge-history`) delete earlier versions together with their runs and artifacts."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

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
    work = Path(tempfile.mkdtemp(prefix="persona-derive-"))
    try:
        directory = population_dir(name, base, work / "download")
        result = change(directory)
        if not result:
            return None
        task, population = name.removeprefix(f"{kind}-").rsplit("-", 1)      # <kind>-<task>-<population>
        reg = register_population_model(kind, task, population, lambda d: shutil.copytree(directory, d),
                                        source.tags["backbone"], {"derived_from": base, "change": note}, {}, [],
                                        source.tags.get("params_hash", ""), repo)
        for key in ("task", "validation_metrics", "validation_split"):      # what promotion reads
            if key in source.tags:
                client.set_model_version_tag(name, reg["version"], key, source.tags[key])
        client.set_model_version_tag(name, reg["version"], "derived_from", base)
        install(name, reg["version"], f"promoted: {note} (derived from version {base}; other users unchanged)")
        log.info("%s: version %s (%s) is the champion", name, reg["version"], note)
        return {**reg, "derived_from": base, "result": result}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def versions_holding(name: str, contains: Callable[[Path], bool], skip: set[str]) -> list[str]:
    """The versions of `name` (other than `skip`) whose directory `contains` says yes to."""
    import mlflow

    found = []
    work = Path(tempfile.mkdtemp(prefix="persona-scan-"))
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
    """Delete model versions, their logged models and runs, then garbage-collect them from
    the tracking store and the artifact store (`mlflow gc`)."""
    import mlflow

    client = mlflow.MlflowClient()
    runs, models = [], []
    for version in versions:
        v = client.get_model_version(name, version)
        client.delete_model_version(name, version)
        if v.model_id:
            client.delete_logged_model(v.model_id)
            models.append(v.model_id)
        if v.run_id:
            client.delete_run(v.run_id)
            runs.append(v.run_id)
    if runs or models:
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
    return [f"{name}/{v}" for v in versions]


def users_in_dir(directory: Path) -> set[str]:
    meta = directory / "users.json"
    return set(json.loads(meta.read_text())["users"]) if meta.exists() else set()
