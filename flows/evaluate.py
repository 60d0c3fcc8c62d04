"""The `evaluate` flow: every configured method on every task, on the same split.

Fans out over methods x tasks (mapped tasks; `max_workers` bounds how many run at once),
retries transient failures, and reuses results whose inputs did not change.
"""

from __future__ import annotations

from prefect import flow, task, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from components.config import load_profile
from components.stopping import stop_if_requested, stopping_workers
from flows.caching import code_version, input_cache_key


@task(retries=2, retry_delay_seconds=5, persist_result=True,
      cache_key_fn=input_cache_key("method", "task_name", "split", "backbone_uri", "repo", "data_version",
                                   "settings_hash", "code", "models", "tracking"))
def evaluate_method(method: str, task_name: str, split: str, backbone_uri: str, repo: str,
                    profile_name: str, data_version: str, settings_hash: str, code: str, models: str = "",
                    tracking: str = "") -> dict:
    # the key holds the repository and the tracking store: the task writes that repository's
    # reports and logs to that store, so a result from another checkout must not stand in for it
    from components.evaluation.run import EvalRequest, run_evaluation

    stop_if_requested()                                    # queued behind a stopped evaluation
    profile = load_profile(profile_name, f"{repo}/params.yaml")
    req = EvalRequest(method=method, task=task_name, split=split, backbone_uri=backbone_uri,
                      batch_size=profile.evaluation.batch_size, num_beams=profile.evaluation.num_beams)
    return run_evaluation(req, profile.name, repo, reports=f"{repo}/reports", progress=False)


def serving_models(method: str, task_name: str, repo: str) -> str:
    """For a per-population method (or Attn-GS), the registered versions it will load (a
    cache-key part: a new champion means a new evaluation); empty for baselines."""
    import json
    from pathlib import Path

    from components.methods.attn_gs.registry import parse_name, serving_versions
    from components.methods.populations import POPULATION_METHODS, serving_version
    from components.tracking.mlflow_tracking import configure

    if parse_name(method) is not None:
        configure(repo)
        return serving_versions(task_name)
    if method not in POPULATION_METHODS:
        return ""
    configure(repo)
    pops = json.loads((Path(repo) / "data" / "prepared" / task_name / "populations.json").read_text())["sizes"]
    return ",".join(f"{p}:{serving_version(f'{method}-{task_name}-{p}')}" for p in sorted(pops))


@flow(name="evaluate", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def evaluate(backbones: dict, repo: str = ".", profile_name: str | None = None) -> dict:
    from pathlib import Path

    from components.storage.dvc import data_version
    from components.tracking.mlflow_tracking import configure

    profile = load_profile(profile_name, f"{repo}/params.yaml")
    repo = str(Path(repo).resolve())
    code, tracking = code_version("components"), configure(repo)
    version = data_version(repo)
    settings = profile.section_hash("evaluation")
    jobs = [(m, t) for t in profile.tasks for m in profile.evaluation.methods]
    futures = evaluate_method.map(
        [m for m, _ in jobs], [t for _, t in jobs], unmapped(profile.evaluation.split),
        [backbones[t]["model_uri"] for _, t in jobs], unmapped(repo), unmapped(profile.name),
        unmapped(version), unmapped(settings), unmapped(code),
        [serving_models(m, t, repo) for m, t in jobs], unmapped(tracking))
    with stopping_workers():
        results = [f.result() for f in futures]
    return {f"{r['task']}/{r['method']}": r for r in results}
