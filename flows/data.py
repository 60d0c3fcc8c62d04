"""The `data` flow: DVC stages (acquire -> validate -> prepare), a readable validation
verdict, and a push to the DVC remote."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task

from components.storage.dvc import DvcError, data_version, run_dvc
from components.validation.runner import ValidationFailed


@task(retries=1, retry_delay_seconds=5)
def reproduce_data_stages(repo: str) -> str:
    """`dvc repro`: only stages whose inputs changed run; a failing validation stops it."""
    try:
        proc = run_dvc("repro", repo=repo)
    except DvcError as exc:
        report = Path(repo) / "data" / "validation.json"
        if report.exists() and not json.loads(report.read_text())["success"]:
            raise ValidationFailed(f"data validation failed, nothing downstream ran:\n{exc}") from None
        raise
    get_run_logger().info(proc.stdout.strip()[-2000:])
    return data_version(repo)


@task
def read_validation_summary(repo: str) -> dict:
    return json.loads((Path(repo) / "data" / "validation.json").read_text())


@task(retries=2, retry_delay_seconds=5)
def log_validation(repo: str, version: str) -> str:
    """The validation verdict and the Data Docs HTML as an MLflow run (experiment `lamp-data`)."""
    import mlflow

    from components.tracking import mlflow_tracking

    mlflow_tracking.configure(repo)
    mlflow_tracking.experiment("data", repo)
    with mlflow.start_run(run_name=f"validation-{version}",
                          tags=mlflow_tracking.standard_tags(repo, kind="validation")) as run:
        summary = json.loads((Path(repo) / "data" / "validation.json").read_text())
        mlflow.log_metric("validation_success", float(summary["success"]))
        mlflow.log_artifact(str(Path(repo) / "data" / "validation.json"))
        mlflow.log_artifacts(str(Path(repo) / "data" / "validation"), artifact_path="data_docs")
    return run.info.run_id


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def push_data(repo: str) -> str:
    proc = run_dvc("push", repo=repo)
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "pushed"


@flow(name="data", log_prints=True)
def data_flow(repo: str = ".", push: bool = True) -> dict:
    version = reproduce_data_stages(repo)
    validation = read_validation_summary(repo)
    log_validation(repo, version)
    pushed = push_data(repo) if push else "skipped"
    prepared = json.loads((Path(repo) / "data" / "prepared" / "summary.json").read_text())
    return {"data_version": version, "validation": validation, "prepared": prepared, "push": pushed}
