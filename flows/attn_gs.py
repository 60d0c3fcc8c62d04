"""The `train_attn_gs` flow: per task, fine-tune the marker -> mark the training profiles ->
train the compressor -> register `attn-gs-marker-<task>` and `attn-gs-compressor-<task>`.

The evaluation across budgets is the `evaluate` flow's job (methods `attn-gs@B` in
`evaluation.methods`; the equal-budget baselines and the plot are in `bench/attn_gs.py`).
Cached by the task backbone, the data version, the `attn_gs` settings, the code and the
tracking store: an unchanged rerun trains nothing.
"""

from __future__ import annotations

from prefect import flow, task

from components.config import load_profile
from flows.caching import code_version, input_cache_key


@task(retries=1, retry_delay_seconds=5, persist_result=True,
      cache_key_fn=input_cache_key("task_name", "backbone_uri", "data_version", "settings_hash", "code", "tracking"))
def train_attn_gs_task(task_name: str, backbone_uri: str, repo: str, profile_name: str, data_version: str,
                       settings_hash: str, code: str, tracking: str) -> dict:
    from components.methods.attn_gs.registry import train_and_register

    profile = load_profile(profile_name, f"{repo}/params.yaml")
    reg = train_and_register(task_name, profile, backbone_uri, repo, progress=False)
    print(f"Attn-GS {task_name}: registered {reg['marker']['model_uri']} and {reg['compressor']['model_uri']}")
    return reg


@flow(name="train_attn_gs", log_prints=True)
def train_attn_gs(backbones: dict, repo: str = ".", profile_name: str | None = None) -> dict:
    from components.storage.dvc import data_version
    from components.tracking.mlflow_tracking import configure

    profile = load_profile(profile_name, f"{repo}/params.yaml")
    version, tracking = data_version(repo), configure(repo)
    code = code_version("components")
    return {t: train_attn_gs_task(t, backbones[t]["model_uri"], repo, profile.name, version,
                                  profile.section_hash("attn_gs"), code, tracking)
            for t in profile.tasks}             # sequential: each training uses every core
