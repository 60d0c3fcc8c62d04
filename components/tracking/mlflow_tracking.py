"""Where runs go, what they are tagged with, and how backbones are registered.

Default store: SQLite at `.state/mlflow.db` with artifacts in `.state/mlartifacts` (the state
directory, `components/storage/state.py`)
(`MLFLOW_TRACKING_URI` overrides both, e.g. a real `mlflow server`; a server is checked
with bounded retries and a clear error). `PERSONA_MLFLOW_ARTIFACTS=s3://bucket/prefix`
puts new experiments' artifacts straight on S3 (with `MLFLOW_S3_ENDPOINT_URL` for a
non-AWS endpoint and the standard AWS credential variables).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

BACKBONE_PIP_REQUIREMENTS = ["torch==2.13.0", "transformers>=5.23,<6", "safetensors", "tokenizers"]


class TrackingUnavailable(RuntimeError):
    pass


def configure(repo: str | Path = ".", attempts: int = 4, backoff: float = 1.0) -> str:
    """Point MLflow at the tracking store and return its URI (a server must answer /health)."""
    import mlflow

    from components.storage.state import state_dir

    state = state_dir(repo)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        state.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{state / 'mlflow.db'}"
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")     # bounded, not MLflow's 7
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        check_server(uri, attempts, backoff)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        from components.storage.files import named_lock

        with named_lock(f"mlflow-store-{uri}"):   # one process creates/migrates a new database
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    return uri


def check_server(uri: str, attempts: int = 4, backoff: float = 1.0) -> None:
    import time
    import urllib.request

    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError as exc:
            reason = type(exc).__name__
        else:
            reason = f"HTTP {r.status}"
        if attempt < attempts:
            log.warning("MLflow server %s not answering (%s), retry %d/%d", uri, reason, attempt, attempts)
            time.sleep(backoff * 2 ** (attempt - 1))
    raise TrackingUnavailable(f"cannot reach the MLflow server at {uri} after {attempts} attempts ({reason}); "
                              "start it (infra/local/mlflow-server.sh) or unset MLFLOW_TRACKING_URI")


def experiment(task: str, repo: str | Path = ".") -> str:
    """One experiment per task (`lamp-<task>`, and `lamp-data` for validation); a local
    SQLite store keeps artifacts in `mlartifacts/` beside the database."""
    import mlflow

    name = f"lamp-{task}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        location = None                      # a tracking server chooses its own artifact store
        uri = mlflow.get_tracking_uri()
        if os.environ.get("PERSONA_MLFLOW_ARTIFACTS"):   # artifacts straight to S3 (or any store)
            location = f"{os.environ['PERSONA_MLFLOW_ARTIFACTS'].rstrip('/')}/{name}"
        elif uri.startswith("sqlite:///"):   # a local database keeps its artifacts beside it
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).resolve().as_uri()
        exp_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit(repo: str | Path = ".") -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def standard_tags(repo: str | Path = ".", **extra: str) -> dict[str, str]:
    from components.storage.dvc import data_version

    tags = {"git_commit": git_commit(repo), "data_version": data_version(repo)}
    tags.update({k: str(v) for k, v in extra.items() if v is not None})
    return tags


def register_backbone(model_dir: str | Path, task: str, tags: dict[str, str], metrics: dict[str, float],
                      params: dict, run_name: str, model_name: str | None = None, kind: str = "backbone") -> dict:
    """Log a backbone-like LM (pyfunc from code + weights artifact) and register it as
    `model_name` (default `backbone-<task>`; Attn-GS registers its marker and compressor so)."""
    import mlflow

    name = model_name or f"backbone-{task}"
    code = Path(__file__).with_name("backbone_model.py")
    with mlflow.start_run(run_name=run_name, tags={**tags, "kind": kind}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        info = mlflow.pyfunc.log_model(
            name="backbone", python_model=str(code), artifacts={"backbone": str(model_dir)},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            pip_requirements=BACKBONE_PIP_REQUIREMENTS, registered_model_name=name)
    client = mlflow.MlflowClient()
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    from components.tracking.registry import mark_challenger

    mark_challenger(name, version)
    return {"name": name, "version": version, "run_id": run.info.run_id, "model_uri": f"models:/{name}/{version}"}


def download_backbone(model_uri: str, dest: str | Path) -> Path:
    """Fetch a registered backbone's weights directory (for loading with load_backbone)."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest)))
    return local / "artifacts" / "backbone"


def backbone_cache_dir(repo: str | Path, model_uri: str) -> Path:
    """Where a registered backbone's files are kept locally: per tracking store, per version
    (version 1 of `backbone-LaMP-2` in two MLflow stores are different models)."""
    import mlflow

    from components.storage.state import state_dir

    store = hashlib.sha256(mlflow.get_tracking_uri().encode()).hexdigest()[:8]
    return state_dir(repo) / "backbones" / store / model_uri.removeprefix("models:/").replace("/", "-v")


def resolve_backbone(task: str, uri: str | None, repo: str | Path = ".", loader=None):
    """A local directory, or a registered backbone (downloaded once into .state/backbones),
    loaded with `loader` (default `load_backbone`; Attn-GS's marker may be an encoder)."""
    from components.backbone.model import load_backbone

    load = loader or load_backbone
    if uri is None:
        uri = latest_backbone_uri(task)
    if not uri.startswith("models:/"):
        return load(uri), uri
    from components.storage.files import named_lock

    cache = backbone_cache_dir(repo, uri)
    weights = cache / "artifacts" / "backbone"
    with named_lock(f"backbone-download-{cache}"):     # processes (torchrun ranks) share one copy
        if not weights.exists():
            tmp = cache.with_name(cache.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            download_backbone(uri, tmp)
            tmp.rename(cache)
    return load(weights), uri


def latest_backbone_uri(task: str, name: str | None = None) -> str:
    """The newest version of `backbone-<task>` (or of the registered model `name`)."""
    import mlflow

    from components.lamp.tasks import get_task

    name = name or f"backbone-{get_task(task).name}"
    versions = mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    if not versions:
        raise FileNotFoundError(f"no registered model {name}: train it first (persona train backbone --task {task})")
    return f"models:/{name}/{max(int(v.version) for v in versions)}"
