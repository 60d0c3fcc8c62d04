"""Train one population's PPlug and register it as `pplug-<task>-<population>`."""

from __future__ import annotations

from pathlib import Path

from components.config import Profile
from components.methods.populations import population_checkpoints, population_inputs, register_population_model


def train_and_register(task: str, population: str, profile: Profile, backbone_uri: str,
                       repo: str | Path = ".", progress: bool = False) -> dict:
    from components.methods.pplug.method import train_pplug
    from components.retrieval.cache import VectorCache
    from components.storage.state import cache_dir

    spec, members, examples, backbone, uri = population_inputs(task, population, profile.pplug.max_examples,
                                                               backbone_uri, repo)
    encoder = profile.pplug.history_encoder()
    cache = VectorCache(cache_dir("vectors", repo), encoder.fingerprint)
    model_cfg, train_cfg = profile.pplug.configs()
    checkpoints = population_checkpoints("pplug", spec.name, population, profile, "pplug", uri, repo)
    method, losses, costs = train_pplug(backbone, spec, examples, model_cfg, train_cfg, encoder, cache,
                                        progress=progress, checkpoints=checkpoints)
    reg = register_population_model(
        "pplug", spec.name, population, method.save, uri,
        {**profile.pplug.model_dump(), "users": len(members), "examples": len(examples)},
        {**costs, "per_user_params": 0}, losses, profile.section_hash("pplug"), repo)
    checkpoints.clear()
    return {**reg, "users": len(members), "examples": len(examples), **costs}
