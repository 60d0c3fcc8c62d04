"""The `retrain` flow, run on a schedule by the deployment in `infra/prefect.yaml`:

pull the latest data version (git + DVC) -> validate and prepare (DVC stages) -> backbone
(cached unless data, settings or code changed) -> retrain only the populations whose data
changed (each population task is keyed on its own members' data) -> score every population
model on the fixed validation split -> promote it to `champion` if at least as good.
"""

from __future__ import annotations

import subprocess

from prefect import flow, task

from components.config import load_profile
from flows.backbone import train_backbone
from flows.data import data_flow
from flows.populations import promote_population, train_limited


@task(retries=2, retry_delay_seconds=[5, 15])
def pull_latest(repo: str) -> str:
    """`git pull --ff-only` when the checkout tracks an upstream, then `dvc pull` when a
    default remote is configured; a workspace with neither keeps its data."""
    from components.storage.dvc import default_remote, run_dvc

    notes = []
    upstream = subprocess.run(["git", "rev-parse", "--abbrev-ref", "@{u}"], cwd=repo, capture_output=True, text=True)
    if upstream.returncode == 0:
        subprocess.run(["git", "pull", "--ff-only", "-q"], cwd=repo, check=True)
        notes.append(f"git pulled from {upstream.stdout.strip()}")
    default = default_remote(repo)
    if default:
        run_dvc("pull", repo=repo)
        notes.append(f"dvc pulled from {default}")
    note = "; ".join(notes) or "no upstream and no DVC remote: using the workspace data"
    print(note)
    return note


@flow(name="retrain", log_prints=True)
def retrain(repo: str = ".", profile_name: str | None = None, methods: list[str] | None = None,
            pull: bool = True, push: bool = False) -> dict:
    profile = load_profile(profile_name, f"{repo}/params.yaml")
    if pull:
        pull_latest(repo)
    data = data_flow(repo=repo, push=push)
    backbones = train_backbone(repo=repo, profile_name=profile.name)
    decisions = {}
    for method in methods or ["tap-per", "pplug"]:
        registered = train_limited(method, backbones, repo, profile.name)
        for key, reg in registered.items():
            decisions[f"{method}:{key}"] = promote_population(method, reg, key, repo)
    promoted = sorted(k for k, d in decisions.items() if d["promoted"])
    print(f"retrain: data {data['data_version']}; {len(decisions)} population models checked, "
          f"{len(promoted)} promoted: {', '.join(promoted) or 'none'}")
    return {"data_version": data["data_version"], "decisions": decisions}
