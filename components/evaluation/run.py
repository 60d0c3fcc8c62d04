"""One evaluation end to end: load the split and the backbone, run the method, write the
predictions file, log an MLflow run, update `reports/summary.json`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from components.lamp.io import read_golds, read_questions
from components.lamp.splits import split_files
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


def run_evaluation(req: EvalRequest, profile: str, repo: str | Path = ".", reports: str | Path = "reports",
                   progress: bool = True) -> dict:
    import mlflow

    from components.evaluation.harness import evaluate
    from components.evaluation.summary import update_summary
    from components.methods import build_method
    from components.methods.populations import POPULATION_METHODS
    from components.tracking import mlflow_tracking

    spec = get_task(req.task)
    from components.config import load_profile
    from components.methods.attn_gs.registry import parse_name

    if req.method not in POPULATION_METHODS and parse_name(req.method) is None:
        build_method(req.method)                          # an unknown name fails before any work
    qfile, ofile = split_files(spec.name, req.split, Path(repo) / "data")
    questions = read_questions(qfile, spec)[: req.limit]
    golds = read_golds(ofile, spec) if ofile.exists() else {}
    mlflow_tracking.configure(repo)
    backbone, uri = mlflow_tracking.resolve_backbone(spec.name, req.backbone_uri, repo)
    method = build_method(req.method, task=spec.name, backbone=backbone, repo=repo,
                          profile=load_profile(profile, Path(repo) / "params.yaml"), num_beams=req.num_beams)
    stem = f"{req.method}__{req.split.replace('/', '-')}"
    if req.limit is not None:        # a smoke run never overwrites the whole split's predictions
        stem += f"__first{req.limit}"
    out_file = Path(reports) / "predictions" / spec.name / f"{stem}.json"
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
