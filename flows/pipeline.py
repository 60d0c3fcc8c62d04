"""The main job (README command (a)): data -> backbone -> per-population TAP-PER and
PPlug (registered, validated on time/dev, promoted) -> Attn-GS marker and compressor
(registered) -> evaluation of every configured method on every task -> comparison tables.

Which methods are trained is read from `evaluation.methods` (a method that is evaluated
is trained first)."""

from __future__ import annotations


from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.attn_gs import train_attn_gs
from flows.backbone import train_backbone
from flows.data import data_flow
from flows.evaluate import evaluate
from flows.populations import promote_population, train_limited


@task(cache_policy=NO_CACHE)
def write_report(repo: str) -> dict:
    """Comparison tables, bar charts, the report with Pareto plots; all logged to MLflow."""
    from components.evaluation.report import publish

    return publish(repo)


def _summarise(data: dict, backbones: dict, decisions: dict, tables: dict) -> str:
    lines = [f"data version {data['data_version']}  (dvc push: {data['push']})"]
    for task_name, splits in data["validation"]["tasks"].items():
        verdict = "ok" if all(s["success"] for s in splits.values()) else "FAILED"
        prep = data["prepared"][task_name]
        lines.append(f"{task_name}: validation {verdict}; users {prep['users']}; populations "
                     f"{prep['populations']}; backbone {backbones[task_name]['model_uri']}")
    for key, d in sorted(decisions.items()):
        state = "registered" if d["promoted"] is None else "champion" if d["promoted"] else "not promoted"
        lines.append(f"{d['name']} v{d['version']}: {state} ({d['reason']})")
    for task_name, table in tables.items():
        lines += ["", f"## {task_name}", table]
    lines += ["", "outputs: data/ (DVC), reports/summary.json, reports/report.{md,html}, reports/pareto-*.png, "
              "reports/comparison-*.{md,png}, "
              "reports/predictions/; runs and models in MLflow (.state/mlflow.db unless MLFLOW_TRACKING_URI)"]
    return "\n".join(lines)


@flow(name="pipeline", log_prints=True)
def pipeline(repo: str = ".", push: bool = True) -> dict:
    from components.config import load_profile
    from components.methods.attn_gs.registry import parse_name
    from components.methods.populations import POPULATION_METHODS

    data = data_flow(repo=repo, push=push)
    backbones = train_backbone(repo=repo)
    decisions = {}
    methods = load_profile(None, f"{repo}/params.yaml").evaluation.methods
    for method in [m for m in methods if m in POPULATION_METHODS]:
        for key, reg in train_limited(method, backbones, repo).items():
            decisions[f"{method}:{key}"] = promote_population(method, reg, key, repo)
    if any(parse_name(m) for m in methods):
        for task_name, reg in train_attn_gs(backbones, repo=repo).items():
            for role in ("marker", "compressor"):
                decisions[f"attn-gs:{task_name}:{role}"] = {**reg[role], "promoted": None,
                                                            "reason": "Attn-GS serves the newest version"}
    results = evaluate(backbones, repo=repo)
    tables = write_report(repo)
    return {"data": data, "backbones": backbones, "promotions": decisions, "evaluations": results,
            "text": _summarise(data, backbones, decisions, tables)}
