"""Train (or adopt) the backbone of a task and register it in MLflow as `backbone-<task>`."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from components.config import Profile
from components.lamp.io import read_golds, read_questions
from components.lamp.splits import split_files
from components.lamp.tasks import get_task

log = logging.getLogger(__name__)


def train_and_register(task: str, profile: Profile, repo: str | Path = ".", progress: bool = True) -> dict:
    """The `demo` backbone is built and trained here; a named checkpoint is registered as is."""
    from components.backbone.embedded import train_embedded_backbone
    from components.backbone.model import load_backbone, save_backbone
    from components.tracking import mlflow_tracking

    spec = get_task(task)
    settings = profile.backbone
    mlflow_tracking.configure(repo)
    mlflow_tracking.experiment(spec.name, repo)
    tags = mlflow_tracking.standard_tags(repo, profile=profile.name, source=settings.source,
                                         params_hash=profile.section_hash("backbone"))
    (Path(repo) / ".state").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"backbone-{spec.name}-", dir=Path(repo) / ".state"))
    try:
        if settings.source == "embedded":
            qfile, ofile = split_files(spec.name, settings.train_split, Path(repo) / "data")
            golds = read_golds(ofile, spec)
            backbone, stats = train_embedded_backbone(spec, read_questions(qfile, spec), golds,
                                                      settings.embedded.to_config(), progress)
            curve = stats.pop("loss_curve")
            (work / "loss_curve.json").write_text(json.dumps(curve))
            params = {**stats.pop("config"), "train_split": settings.train_split}
            metrics = {k: float(v) for k, v in stats.items()}
        else:
            backbone = load_backbone(settings.source)
            params, metrics = {"source": settings.source}, {}
        model_dir = save_backbone(backbone, work / "backbone")   # MLflow names the artifact after it
        reg = mlflow_tracking.register_backbone(model_dir, spec.name, tags, metrics, params,
                                                run_name=f"backbone-{spec.name}")
        cache = mlflow_tracking.backbone_cache_dir(repo, reg["model_uri"])
        (cache / "artifacts").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cache / "artifacts" / "backbone", ignore_errors=True)
        shutil.move(str(model_dir), cache / "artifacts" / "backbone")
        log.info("registered %s (run %s); weights in %s", reg["model_uri"], reg["run_id"], cache)
        return {**reg, "metrics": metrics}
    finally:
        shutil.rmtree(work, ignore_errors=True)
