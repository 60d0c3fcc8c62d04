"""Per-population training flows: `train_tap_per` and `train_pplug`.

One model per (task, population), trained as mapped Prefect tasks within a concurrency
limit (`<method>.max_parallel` in params.yaml), each registered in MLflow as
`<method>-<task>-<population>`. A task is cached by its backbone, the population's own data (members and their history,
`population_fingerprint`), the method's settings section, the code version and the
tracking store, so an unchanged rerun trains nothing and a data change retrains only the
populations it touched.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from components.config import load_profile
from components.stopping import stop_if_requested, stopping_workers
from flows.caching import code_version, input_cache_key

METHODS = {"tap-per": ("tap_per", "components.methods.tap_per.population"),
           "pplug": ("pplug", "components.methods.pplug.population")}


@task(retries=1, retry_delay_seconds=5, persist_result=True,
      cache_key_fn=input_cache_key("method", "task_name", "population", "backbone_uri", "population_data",
                                   "settings_hash", "code", "tracking"))
def train_population_task(method: str, task_name: str, population: str, backbone_uri: str, repo: str,
                          profile_name: str, population_data: str, settings_hash: str, code: str,
                          tracking: str) -> dict:
    import importlib

    stop_if_requested()                                    # queued behind a stopped training
    profile = load_profile(profile_name, f"{repo}/params.yaml")
    module = importlib.import_module(METHODS[method][1])
    reg = module.train_and_register(task_name, population, profile, backbone_uri, repo)
    print(f"{method} {task_name}/{population}: registered {reg['model_uri']}")
    return reg


def _train_populations(method: str, backbones: dict, repo: str, profile_name: str | None) -> dict:
    from components.methods.populations import population_fingerprint
    from components.tracking.mlflow_tracking import configure

    profile = load_profile(profile_name, f"{repo}/params.yaml")
    jobs = []
    for task_name in profile.tasks:
        pops = json.loads((Path(repo) / "data" / "prepared" / task_name / "populations.json").read_text())
        jobs += [(task_name, p) for p in sorted(pops["sizes"])]
    futures = train_population_task.map(
        unmapped(method), [t for t, _ in jobs], [p for _, p in jobs], [backbones[t]["model_uri"] for t, _ in jobs],
        unmapped(repo), unmapped(profile.name), [population_fingerprint(t, p, repo) for t, p in jobs],
        unmapped(profile.section_hash(METHODS[method][0])), unmapped(code_version("components")),
        unmapped(configure(repo)))
    with stopping_workers():                # SIGTERM reaches this thread: the trainings save and stop
        return {f"{t}/{p}": f.result() for (t, p), f in zip(jobs, futures)}


@task(retries=1, retry_delay_seconds=5)
def promote_population(method: str, reg: dict, key: str, repo: str) -> dict:
    """Validate a (new or cached) population model on time/dev and apply the promotion rule."""
    from components.methods.populations import validate_and_promote
    from components.tracking.mlflow_tracking import configure

    configure(repo)
    task_name, population = key.split("/")
    decision = validate_and_promote(method, reg, task_name, population, repo)
    print(f"{reg['name']} v{reg['version']}: {'champion' if decision['promoted'] else 'kept the champion'} "
          f"({decision['reason']})")
    return decision


@flow(name="train_tap_per", log_prints=True)
def train_tap_per(backbones: dict, repo: str = ".", profile_name: str | None = None) -> dict:
    return _train_populations("tap-per", backbones, repo, profile_name)


@flow(name="train_pplug", log_prints=True)
def train_pplug(backbones: dict, repo: str = ".", profile_name: str | None = None) -> dict:
    return _train_populations("pplug", backbones, repo, profile_name)


def train_limited(method: str, backbones: dict, repo: str = ".", profile_name: str | None = None) -> dict:
    """The method's flow with at most `<method>.max_parallel` populations training at once."""
    profile = load_profile(profile_name, f"{repo}/params.yaml")
    limit = getattr(profile, METHODS[method][0]).max_parallel
    flow_fn = {"tap-per": train_tap_per, "pplug": train_pplug}[method]
    runner = ThreadPoolTaskRunner(max_workers=limit)
    return flow_fn.with_options(task_runner=runner)(backbones, repo=repo, profile_name=profile_name)
