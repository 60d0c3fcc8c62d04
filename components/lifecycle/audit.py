"""Where is a user still? Scans for the user id (as a whole token) and for the user's own
texts (inputs and history items no other user has).

Current state (must be clean after `forget`): the data directory, the vector and context
caches (vector shards hold hashes of texts, so they are checked by key), and the newest and
serving versions of every registered model. History (reported; must be clean after
`--purge-history`): earlier versions of per-user models, everything the MLflow tracking store
really holds (every experiment's artifacts, runs and logged models alike, and a SQLite
database's bytes), the DVC cache and the DVC remote (a local directory or S3).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

from components.storage.state import make_temporary


class Needles:
    def __init__(self, user: str, texts: Iterable[str]):
        self.user = user
        self.id_pattern = re.compile(rb"(?<![A-Za-z0-9_])" + re.escape(user.encode()) + rb"(?![A-Za-z0-9_])")
        self.texts = sorted({t.encode("utf-8") for t in texts if t} |
                            {json.dumps(t)[1:-1].encode() for t in texts if t})

    def find(self, blob: bytes) -> list[str]:
        hits = ["user id"] if self.id_pattern.search(blob) else []
        n = sum(1 for t in self.texts if t in blob)
        return hits + ([f"{n} of the user's texts"] if n else [])


def scan_tree(root: Path, needles: Needles, skip: Iterable[str] = ()) -> list[str]:
    found = []
    if not root.exists():
        return found
    skipped = {str(Path(s)) for s in skip}
    for path in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
        if str(path) in skipped or path.suffix == ".lock":
            continue
        hits = needles.find(path.read_bytes())
        if hits:
            found.append(f"{path}: {', '.join(hits)}")
    return found


def scan_vectors(root: Path | None, strings: set[str]) -> list[str]:
    from components.retrieval.cache import text_key

    if root is None or not root.exists() or not strings:
        return []
    keys = {text_key(s) for s in strings}
    found = []
    for shard in sorted(root.rglob("shard-*.safetensors")):
        from safetensors import safe_open

        with safe_open(str(shard), framework="pt") as f:
            n = len(keys & set(json.loads(f.metadata()["keys"])))
        if n:
            found.append(f"{shard}: vectors of {n} of the user's texts")
    return found


def scan_models(needles: Needles, repo: str | Path = ".") -> tuple[list[str], list[str]]:
    """(hits in the newest and serving versions of every registered model, hits in earlier
    versions of per-user models), each as `name/version: where`."""
    import mlflow

    from components.lifecycle.models import users_in_dir

    client = mlflow.MlflowClient()
    current, history = [], []
    work = make_temporary("audit", repo)
    try:
        for model in client.search_registered_models():
            versions = client.search_model_versions(f"name='{model.name}'")
            if not versions:
                continue
            latest = max(int(v.version) for v in versions)
            serving = {str(v) for v in model.aliases.values()} if isinstance(model.aliases, dict) else set()
            for v in versions:
                is_current = int(v.version) == latest or str(v.version) in serving
                if not is_current and not model.name.startswith("tap-per-"):
                    continue                     # only per-user models keep users in old versions
                dest = work / model.name / str(v.version)
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model.name}/{v.version}",
                                                                 dst_path=str(dest)))
                hits = scan_tree(local, needles)
                pop = local / "artifacts" / "population"
                if pop.exists() and needles.user in users_in_dir(pop):
                    hits.append("P_u row")
                if hits:
                    (current if is_current else history).append(f"{model.name}/{v.version}: {len(hits)} finding(s)")
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return current, history


def scan_s3(url: str, needles: Needles, endpoint: str | None = None) -> list[str]:
    """Every object under an `s3://bucket/prefix` URL (boto3; `endpoint` for a server that is
    not AWS, else boto3's own configuration)."""
    import boto3

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            hits = needles.find(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
            if hits:
                found.append(f"s3://{bucket}/{obj['Key']}: {', '.join(hits)}")
    return found


def scan_tracking_store(needles: Needles, repo: str | Path = ".") -> list[str]:
    """What the MLflow tracking store really holds, read from storage rather than from what
    the registry lists: every artifact of every experiment (runs and logged models, deleted
    or not; a local folder in place, S3 through boto3, anything else such as a server's
    proxied store through MLflow's download), and a local SQLite database as bytes."""
    import mlflow
    from mlflow.entities import ViewType

    found = []
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-journal")):
            found += scan_tree(path, needles)
    for exp in mlflow.MlflowClient().search_experiments(view_type=ViewType.ALL):
        location = exp.artifact_location or ""
        scheme = urllib.parse.urlparse(location).scheme
        if scheme == "s3":
            found += scan_s3(location, needles, os.environ.get("MLFLOW_S3_ENDPOINT_URL"))
        elif scheme in ("", "file"):
            found += scan_tree(Path(urllib.parse.unquote(urllib.parse.urlparse(location).path)), needles)
        else:
            if not mlflow.artifacts.list_artifacts(artifact_uri=location):
                continue                          # nothing stored under this experiment yet
            work = make_temporary("audit-store", repo)
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(work)))
                found += [f"{location}/{hit.removeprefix(str(local)).lstrip('/')}" for hit in scan_tree(local, needles)]
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return found


def scan_dvc_remote(repo: Path, needles: Needles) -> list[str]:
    """Every object of the default DVC remote (a directory, or S3 through boto3)."""
    from components.storage.dvc import default_remote, run_dvc

    name = default_remote(repo)
    if not name:
        return []
    url = run_dvc("remote", "list", repo=repo).stdout
    url = next((line.split()[1] for line in url.splitlines() if line.split() and line.split()[0] == name), "")
    if url.startswith("s3://"):
        endpoint = run_dvc("config", f"remote.{name}.endpointurl", repo=repo, check=False).stdout.strip() or None
        return scan_s3(url, needles, endpoint)
    path = Path(url) if Path(url).is_absolute() else (repo / ".dvc" / url).resolve()
    return scan_tree(path, needles)


def audit_user(user: str, texts: set[str], tasks: list[str], repo: str | Path = ".",
               vector_strings: set[str] = frozenset(), require_history: bool = False) -> dict:
    from components.storage.state import cache_dir
    from components.tracking import mlflow_tracking

    repo = Path(repo).resolve()
    needles = Needles(user, texts)
    mlflow_tracking.configure(repo)
    current_models, old_models = scan_models(needles, repo)
    current = {
        "data": scan_tree(repo / "data", needles, skip=[repo / "data" / "forgotten.json"]),
        "caches": scan_vectors(cache_dir("vectors", repo), set(vector_strings))
        + scan_tree(cache_dir("contexts", repo), needles),
        "models": current_models,
    }
    history = {
        "model_versions": old_models,
        "tracking_store": scan_tracking_store(needles, repo),
        "dvc_cache": scan_tree(repo / ".dvc" / "cache", needles),
        "dvc_remote": scan_dvc_remote(repo, needles) if (repo / ".dvc").is_dir() else [],
    }
    clean = not any(current.values()) and (not require_history or not any(history.values()))
    return {"clean": clean, "current": current, "history": history,
            "searched_for": {"user_id": user, "texts": len(texts)}, "history_required_clean": require_history}
