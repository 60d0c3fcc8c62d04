"""Train one population's TAP-PER model and register it as `tap-per-<task>-<population>`."""

from __future__ import annotations

from pathlib import Path

from components.config import Profile
from components.methods.populations import population_checkpoints, population_inputs, register_population_model


def train_and_register(task: str, population: str, profile: Profile, backbone_uri: str,
                       repo: str | Path = ".", progress: bool = False) -> dict:
    from components.methods.tap_per.method import TapPerMethod
    from components.methods.tap_per.train import train_population

    spec, members, examples, backbone, uri = population_inputs(task, population, profile.tap_per.max_examples,
                                                               backbone_uri, repo)
    model_cfg, train_cfg = profile.tap_per.configs()
    checkpoints = population_checkpoints("tap-per", spec.name, population, profile, "tap_per", uri, repo)
    bridged, prefix, index, losses = train_population(backbone, spec, examples, members, model_cfg,
                                                      train_cfg, progress=progress, checkpoints=checkpoints)
    method = TapPerMethod(bridged, prefix, index, train_cfg.max_records)
    reg = register_population_model(
        "tap-per", spec.name, population, method.save, uri,
        {**profile.tap_per.model_dump(), "users": len(members), "examples": len(examples)},
        {"per_user_params": method.per_user_params}, losses, profile.section_hash("tap_per"), repo)
    checkpoints.clear()
    return {**reg, "users": len(members), "examples": len(examples)}
