"""Train (or adopt) the backbone of a task and register it in MLflow as `backbone-<task>`."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from components.config import Profile
from components.lamp.io import read_golds, read_questions
from components.lamp.splits import split_files
from components.lamp.tasks import get_task
from components.storage.checkpoints import Checkpoints, checkpoint_path
from components.storage.state import make_temporary

log = logging.getLogger(__name__)


def train_and_register(task: str, profile: Profile, repo: str | Path = ".", progress: bool = True) -> dict:
    """The `demo` backbone is built and trained here; a named checkpoint is registered as is."""
    from components.backbone.checks import check_answer_budget, synthetic_vocabulary_split
    from components.backbone.embedded import train_embedded_backbone
    from components.backbone.model import load_backbone, save_backbone
    from components.tracking import mlflow_tracking

    from components import distributed

    ctx = distributed.init()
    spec = get_task(task)
    settings = profile.backbone
    if ctx.is_main:                        # only rank 0 talks to MLflow (one writer per store)
        mlflow_tracking.configure(repo)
        mlflow_tracking.experiment(spec.name, repo)
        tags = mlflow_tracking.standard_tags(repo, profile=profile.name, source=settings.source,
                                             params_hash=profile.section_hash("backbone"))
    work = make_temporary(f"backbone-{spec.name}", repo)
    try:
        if settings.source == "embedded":
            qfile, ofile = split_files(spec.name, settings.train_split, Path(repo) / "data")
            golds = read_golds(ofile, spec)
            reader = reader_at(settings.reader.to_config(), repo)
            weights = reader.directory() / "model.safetensors"       # a rebuilt reader starts afresh
            checkpoints = Checkpoints(checkpoint_path(repo, f"backbone-{spec.name}",
                                                      json.dumps(settings.embedded.model_dump(), sort_keys=True),
                                                      weights.read_bytes() if weights.exists() else b"",
                                                      qfile.read_bytes(), ofile.read_bytes()),
                                      settings.checkpoint_every, ctx.is_main)
            backbone, stats = train_embedded_backbone(spec, read_questions(qfile, spec), golds,
                                                      settings.embedded.to_config(), progress, checkpoints, reader)
            curve = stats.pop("loss_curve")
            (work / "loss_curve.json").write_text(json.dumps(curve))
            params = {**stats.pop("config"), "train_split": settings.train_split}
            metrics = {k: float(v) for k, v in stats.items()}
        else:
            backbone = load_backbone(settings.source)
            params, metrics = {"source": settings.source}, {}
            qfile, ofile = split_files(spec.name, settings.train_split, Path(repo) / "data")
            check_answer_budget(spec, read_golds(ofile, spec), backbone.tokenize)
        if profile.data.source == "synth":
            metrics["synth_tokens_per_word"] = synthetic_vocabulary_split(backbone.tokenize, backbone.name)
        if not ctx.is_main:                  # every rank holds the same weights; rank 0 registers
            return {"rank": ctx.rank, "checksum": checksum(backbone.model)}
        model_dir = save_backbone(backbone, work / "backbone")   # MLflow names the artifact after it
        reg = mlflow_tracking.register_backbone(model_dir, spec.name, tags, metrics, params,
                                                run_name=f"backbone-{spec.name}")
        cache = mlflow_tracking.backbone_cache_dir(repo, reg["model_uri"])
        (cache / "artifacts").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cache / "artifacts" / "backbone", ignore_errors=True)
        shutil.move(str(model_dir), cache / "artifacts" / "backbone")
        log.info("registered %s (run %s); weights in %s", reg["model_uri"], reg["run_id"], cache)
        if settings.source == "embedded":
            checkpoints.clear()                          # registered: nothing left to resume
        return {**reg, "metrics": metrics, "rank": 0, "checksum": checksum(backbone.model)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def reader_at(reader, repo: str | Path):
    """The reader's settings with its path resolved against the repository."""
    from dataclasses import replace

    return replace(reader, path=str(reader.directory(repo)))


def checksum(model) -> float:
    """A fingerprint of the weights (identical across data-parallel ranks)."""
    import torch

    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(model.parameters())))


def main(argv: list[str] | None = None) -> int:
    """`python -m components.backbone.train --task LaMP-2`, or the same under `torchrun`."""
    import argparse

    from components.config import load_profile

    ap = argparse.ArgumentParser(description="Train (or adopt) a task's backbone and register it; runs "
                                             "as one process or under torchrun (data parallel, rank 0 logs).")
    ap.add_argument("--task", required=True, help="LaMP task, e.g. LaMP-2")
    ap.add_argument("--repo", default=".", help="repository root (params.yaml, data/)")
    ap.add_argument("--profile", help="params.yaml profile")
    ap.add_argument("--result-file", help="where rank 0 writes the registration as JSON")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    profile = load_profile(args.profile, Path(args.repo) / "params.yaml")
    out = train_and_register(args.task, profile, args.repo, progress=not args.no_progress)
    print(json.dumps({"rank": out["rank"], "checksum": out["checksum"]}))
    if args.result_file and out["rank"] == 0:
        from components.storage.files import write_json_atomic

        write_json_atomic(args.result_file, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
