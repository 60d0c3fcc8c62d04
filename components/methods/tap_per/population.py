"""Train one population's TAP-PER model and register it as `tap-per-<task>-<population>`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from components.config import Profile
from components.lamp.history import history_examples
from components.lamp.io import read_questions
from components.lamp.tasks import get_task


def population_members(task: str, population: str, repo: str | Path = ".") -> list[str]:
    pops = json.loads((Path(repo) / "data" / "prepared" / get_task(task).name / "populations.json").read_text())
    members = sorted(u for u, p in pops["populations"].items() if p == population)
    if not members:
        raise KeyError(f"no users in population {population!r} of {task}; known: {sorted(pops['sizes'])}")
    return members


def population_examples(task: str, members: list[str], repo: str | Path = "."):
    """Each member's history items (from their time/train and time/dev questions) as examples."""
    from components.lamp.splits import split_files

    spec = get_task(task)
    keep = set(members)
    questions = []
    for split in ("time/train", "time/dev"):
        questions += [q for q in read_questions(split_files(spec.name, split, Path(repo) / "data")[0], spec)
                      if q.user_key in keep]
    return list(history_examples(spec, questions))


def train_and_register(task: str, population: str, profile: Profile, backbone_uri: str,
                       repo: str | Path = ".", progress: bool = False) -> dict:
    import mlflow

    from components.methods.tap_per.method import TapPerMethod
    from components.methods.tap_per.train import train_population
    from components.tracking import mlflow_tracking

    spec = get_task(task)
    mlflow_tracking.configure(repo)
    members = population_members(spec.name, population, repo)
    examples = population_examples(spec.name, members, repo)
    backbone, uri = mlflow_tracking.resolve_backbone(spec.name, backbone_uri, repo)
    model_cfg, train_cfg = profile.tap_per.configs()
    bridged, prefix, index, losses = train_population(backbone, spec, examples, members, model_cfg,
                                                      train_cfg, progress=progress)
    method = TapPerMethod(bridged, prefix, index, train_cfg.max_records)
    name = f"tap-per-{spec.name}-{population}"
    tags = mlflow_tracking.standard_tags(repo, backbone=uri, population=population, kind="tap-per",
                                         params_hash=profile.section_hash("tap_per"))
    mlflow_tracking.experiment(spec.name, repo)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        method.save(work / "population")
        with mlflow.start_run(run_name=f"train-{name}", tags=tags) as run:
            mlflow.log_params({**profile.tap_per.model_dump(), "users": len(members), "examples": len(examples)})
            for step, value in enumerate(losses):
                mlflow.log_metric("train_loss", value, step=step)
            info = mlflow.pyfunc.log_model(
                name="tap_per", python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={"population": str(work / "population")},
                code_paths=[str(Path(__file__).resolve().parents[2])],
                pip_requirements=["torch==2.13.0", "transformers>=5.23,<6", "peft>=0.21,<0.22", "safetensors"],
                registered_model_name=name, model_config={"backbone_uri": uri, "task": spec.name})
        version = str(info.registered_model_version)
        client = mlflow.MlflowClient()
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        return {"name": name, "version": version, "model_uri": f"models:/{name}/{version}",
                "run_id": run.info.run_id, "users": len(members), "examples": len(examples),
                "final_loss": losses[-1] if losses else None}
    finally:
        shutil.rmtree(work, ignore_errors=True)
