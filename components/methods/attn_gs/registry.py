"""Train, register and load Attn-GS: `attn-gs-marker-<task>` and `attn-gs-compressor-<task>`.

Both are registered like backbones (a `save_pretrained` directory behind the backbone
pyfunc), tagged with the task backbone they were tuned from, the data version, the
settings hash and the git commit. `load_method("attn-gs@8", ...)` serves the newest
versions; the cache of compressed contexts is keyed by those versions.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from components.config import Profile
from components.storage.state import make_temporary

log = logging.getLogger(__name__)


def model_names(task: str) -> tuple[str, str]:
    return f"attn-gs-marker-{task}", f"attn-gs-compressor-{task}"


def train_and_register(task: str, profile: Profile, backbone_uri: str, repo: str | Path = ".",
                       progress: bool = True) -> dict:
    from components.backbone.model import save_backbone
    from components.lamp.tasks import get_task
    from components.methods.attn_gs.data import training_data
    from components.methods.attn_gs.train import train_attn_gs
    from components.tracking import mlflow_tracking

    spec = get_task(task)
    settings = profile.attn_gs
    mlflow_tracking.configure(repo)
    mlflow_tracking.experiment(spec.name, repo)
    backbone, uri = mlflow_tracking.resolve_backbone(spec.name, backbone_uri, repo)
    pairs = training_data(spec, Path(repo) / "data", settings.max_train_examples, profile.backbone.train_split)
    marker, compressor, info = train_attn_gs(backbone, spec, pairs, settings, progress)
    tags = mlflow_tracking.standard_tags(repo, profile=profile.name, backbone=uri,
                                         params_hash=profile.section_hash("attn_gs"))
    params = {**settings.model_dump(), "training_examples": len(pairs)}
    out = {}
    work = make_temporary(f"attn-gs-{spec.name}", repo)
    try:
        for role, model, name in (("marker", marker, model_names(spec.name)[0]),
                                  ("compressor", compressor, model_names(spec.name)[1])):
            model_dir = save_backbone(model, work / role / "backbone")
            metrics = {k: float(v) for k, v in info.items() if k.startswith(role) or k.endswith("seconds")}
            reg = mlflow_tracking.register_backbone(model_dir, spec.name, tags, metrics, params, run_name=name,
                                                    model_name=name, kind=f"attn-gs-{role}")
            log.info("registered %s (run %s)", reg["model_uri"], reg["run_id"])
            out[role] = reg
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**out, "training": info}


def parse_name(name: str) -> tuple[str, int] | None:
    """`attn-gs@8` -> ("attention", 8); the baselines `random-marking@B`, `mark-all@B`,
    `direct-summary@B` use the same compressor. None if `name` is none of them."""
    from components.methods.attn_gs.method import VARIANTS

    prefix, sep, budget = name.partition("@")
    variants = {v: k for k, v in VARIANTS.items()}
    if not sep or prefix not in variants:
        return None
    if not budget.isdigit() or int(budget) < 1:
        raise ValueError(f"{name!r}: the budget after @ must be a positive number of tokens")
    return variants[prefix], int(budget)


def load_method(name: str, task: str, profile: Profile, repo: str | Path = "."):
    """The Attn-GS method `name` over the newest registered marker and compressor of `task`."""
    from components.methods.attn_gs.marking import Marker, load_white_box
    from components.methods.attn_gs.method import TARGET_BUILDERS, AttnGSMethod, ranking_of
    from components.tracking.mlflow_tracking import latest_backbone_uri, resolve_backbone

    variant, budget = parse_name(name)
    marker_name, compressor_name = model_names(task)
    try:
        uris = [latest_backbone_uri(task, n) for n in (marker_name, compressor_name)]
    except FileNotFoundError:
        raise FileNotFoundError(f"{name} needs {marker_name} and {compressor_name} in the MLflow registry: "
                                f"train them first (persona train attn-gs --task {task})") from None
    marking = profile.attn_gs.configs()[0]
    compressor, _ = resolve_backbone(task, uris[1], repo)
    marker = (Marker(resolve_backbone(task, uris[0], repo, loader=load_white_box)[0], marking)
              if variant == "attention" else None)
    return AttnGSMethod(marker, compressor, budget, variant, marking, versions="|".join(uris),
                        ranking=ranking_of(TARGET_BUILDERS.get(profile.attn_gs.target)))


def serving_versions(task: str) -> str:
    """The marker and compressor versions an Attn-GS evaluation would load (a cache-key part)."""
    from components.tracking.mlflow_tracking import latest_backbone_uri

    try:
        return ",".join(latest_backbone_uri(task, n) for n in model_names(task))
    except FileNotFoundError:
        return "none"
