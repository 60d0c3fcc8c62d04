"""One evaluation end to end: load the split and the backbone, run the method, write the
predictions file, log an MLflow run, update `reports/summary.json`."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from components.lamp.io import read_outputs, read_questions
from components.lamp.tasks import get_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalRequest:
    method: str
    task: str
    split: str = "time/test"          # <kind>/<split> under data/prepared/<task>/
    backbone_uri: str | None = None   # models:/backbone-<task>/<version>, or a local directory
    batch_size: int = 32
    num_beams: int = 1
    limit: int | None = None          # evaluate only the first N questions (smoke runs)


def split_files(task: str, split: str, data_root: str | Path = "data") -> tuple[Path, Path]:
    kind, _, name = split.partition("/")
    if not name:
        raise ValueError(f"split must look like <kind>/<split>, e.g. time/test or user/dev; got {split!r}")
    base = Path(data_root) / "prepared" / get_task(task).name / kind
    q, o = base / f"{name}_questions.json", base / f"{name}_outputs.json"
    if not q.exists():
        raise FileNotFoundError(f"no split {split!r} for {task}: {q} is missing (run `dvc repro` first)")
    return q, o


def backbone_cache_dir(repo: str | Path, model_uri: str) -> Path:
    """Where a registered backbone's files are kept locally: per tracking store, per version
    (version 1 of `backbone-LaMP-2` in two MLflow stores are different models)."""
    import hashlib

    import mlflow

    store = hashlib.sha256(mlflow.get_tracking_uri().encode()).hexdigest()[:8]
    return Path(repo).resolve() / ".state" / "backbones" / store / model_uri.removeprefix("models:/").replace("/", "-v")


def resolve_backbone(task: str, uri: str | None, repo: str | Path = "."):
    """A local directory, or a registered backbone (downloaded once into .state/backbones)."""
    from components.backbone.model import load_backbone
    from components.tracking import mlflow_tracking

    if uri is None:
        uri = latest_backbone_uri(task)
    if not uri.startswith("models:/"):
        return load_backbone(uri), uri
    cache = backbone_cache_dir(repo, uri)
    weights = cache / "artifacts" / "backbone"
    if not weights.exists():
        tmp = cache.with_name(cache.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        mlflow_tracking.download_backbone(uri, tmp)
        tmp.rename(cache)
    return load_backbone(weights), uri


def latest_backbone_uri(task: str) -> str:
    import mlflow

    name = f"backbone-{get_task(task).name}"
    versions = mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    if not versions:
        raise FileNotFoundError(f"no registered model {name}: train it first (persona train backbone --task {task})")
    return f"models:/{name}/{max(int(v.version) for v in versions)}"


def run_evaluation(req: EvalRequest, profile: str, repo: str | Path = ".", reports: str | Path = "reports",
                   progress: bool = True) -> dict:
    import mlflow

    from components.evaluation.harness import evaluate
    from components.evaluation.summary import update_summary
    from components.methods import build_method
    from components.tracking import mlflow_tracking

    spec = get_task(req.task)
    method = build_method(req.method, num_beams=req.num_beams)
    qfile, ofile = split_files(spec.name, req.split, Path(repo) / "data")
    questions = read_questions(qfile, spec)[: req.limit]
    golds = {o.id: o.output for o in read_outputs(ofile, spec)[1]} if ofile.exists() else {}
    mlflow_tracking.configure(repo)
    backbone, uri = resolve_backbone(spec.name, req.backbone_uri, repo)
    out_file = Path(reports) / "predictions" / spec.name / f"{req.method}__{req.split.replace('/', '-')}.json"
    result = evaluate(method, backbone, spec, questions, golds, req.split, req.batch_size, out_file, progress)
    mlflow_tracking.experiment(spec.name, repo)
    tags = mlflow_tracking.standard_tags(repo, backbone=uri, method=req.method, split=req.split, kind="evaluation")
    with mlflow.start_run(run_name=f"eval-{req.method}-{req.split.replace('/', '-')}", tags=tags) as run:
        mlflow.log_params({"method": req.method, "task": spec.name, "split": req.split, "n": result.n,
                           "limit": req.limit,
                           "batch_size": req.batch_size, "num_beams": req.num_beams, "backbone": uri})
        mlflow.log_metrics({**result.metrics, **result.costs, "per_user_params": result.per_user_params})
        mlflow.log_artifact(str(out_file), artifact_path="predictions")
    entry = {**result.summary_entry(), "mlflow_run_id": run.info.run_id, "split": req.split}
    if req.limit is None:            # a smoke run on part of a split is not a standing
        update_summary(Path(reports) / "summary.json", profile, spec.name, req.method, entry)
    log.info("%s on %s/%s: %s -> %s", req.method, spec.name, req.split, result.metrics, out_file)
    return {**result.to_dict(), "mlflow_run_id": run.info.run_id, "backbone": uri}
