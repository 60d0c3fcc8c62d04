"""The `train_tap_per` flow (issue 5, in progress): one TAP-PER model per population and
task, trained as mapped tasks within a concurrency limit, each registered in MLflow as
`tap-per-<task>-<population>`. Cached by data version, settings and code version."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from components.config import load_profile
from flows.caching import code_version, input_cache_key


@task(retries=1, retry_delay_seconds=5, persist_result=True,
      cache_key_fn=input_cache_key("task_name", "population", "backbone_uri", "data_version", "settings_hash",
                                   "code"))
def train_population_task(task_name: str, population: str, backbone_uri: str, repo: str, profile_name: str,
                          data_version: str, settings_hash: str, code: str) -> dict:
    from components.methods.tap_per.population import train_and_register

    profile = load_profile(profile_name, f"{repo}/params.yaml")
    return train_and_register(task_name, population, profile, backbone_uri, repo)


@flow(name="train_tap_per", log_prints=True)
def train_tap_per(backbones: dict, repo: str = ".", profile_name: str | None = None) -> dict:
    from components.storage.dvc import data_version

    profile = load_profile(profile_name, f"{repo}/params.yaml")
    jobs = []
    for task_name in profile.tasks:
        pops = json.loads((Path(repo) / "data" / "prepared" / task_name / "populations.json").read_text())
        jobs += [(task_name, p) for p in sorted(pops["sizes"])]
    futures = train_population_task.map(
        [t for t, _ in jobs], [p for _, p in jobs], [backbones[t]["model_uri"] for t, _ in jobs],
        unmapped(repo), unmapped(profile.name), unmapped(data_version(repo)),
        unmapped(profile.section_hash("tap_per")), unmapped(code_version("components")))
    return {f"{t}/{p}": f.result() for (t, p), f in zip(jobs, futures)}


def train_tap_per_limited(backbones: dict, repo: str = ".", profile_name: str | None = None) -> dict:
    """`train_tap_per` with at most `tap_per.max_parallel` populations training at once."""
    limit = load_profile(profile_name, f"{repo}/params.yaml").tap_per.max_parallel
    runner = ThreadPoolTaskRunner(max_workers=limit)
    return train_tap_per.with_options(task_runner=runner)(backbones, repo=repo, profile_name=profile_name)
