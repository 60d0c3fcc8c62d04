"""The `train_backbone` flow: one backbone per task, registered in MLflow.

Cached: with the same data version, backbone settings and backbone code, a second run
returns the registered version instead of training again.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components.config import load_profile
from flows.caching import code_version, input_cache_key


@task(retries=1, retry_delay_seconds=5, persist_result=True,
      cache_key_fn=input_cache_key("task_name", "data_version", "settings_hash", "code", "tracking"))
def train_task_backbone(task_name: str, repo: str, profile_name: str, data_version: str,
                        settings_hash: str, code: str, tracking: str) -> dict:
    profile = load_profile(profile_name, f"{repo}/params.yaml")
    if profile.backbone.processes > 1:          # data parallel: torchrun, rank 0 registers
        import json
        import tempfile
        from pathlib import Path

        from components import distributed

        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "registration.json"
            distributed.launch("components.backbone.train",
                               ["--task", task_name, "--repo", repo, "--profile", profile.name,
                                "--result-file", str(result), "--no-progress"],
                               profile.backbone.processes, cwd=repo)
            return json.loads(result.read_text())
    from components.backbone.train import train_and_register

    return train_and_register(task_name, profile, repo)


@task(cache_policy=NO_CACHE)
def versions(repo: str) -> dict:
    from components.storage.dvc import data_version
    from components.tracking.mlflow_tracking import configure

    return {"data": data_version(repo), "tracking": configure(repo),
            "code": code_version("components/backbone", "components/lamp/prompts.py",
                                 "components/retrieval/rankers.py")}


@flow(name="train_backbone", log_prints=True)
def train_backbone(repo: str = ".", profile_name: str | None = None) -> dict:
    profile = load_profile(profile_name, f"{repo}/params.yaml")
    v = versions(repo)
    out = {}
    for task_name in profile.tasks:         # sequential: each training uses every core
        out[task_name] = train_task_backbone(task_name, repo, profile.name, v["data"],
                                             profile.section_hash("backbone"), v["code"], v["tracking"])
    return out
