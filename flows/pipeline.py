"""The main job (README command (a)). Today: the data plane; later issues add training,
evaluation, registration and promotion as further steps of this same flow."""

from __future__ import annotations

from prefect import flow

from flows.data import data_flow


def _summarise(data: dict) -> str:
    lines = [f"data version {data['data_version']}  (dvc push: {data['push']})"]
    for task, splits in data["validation"]["tasks"].items():
        verdict = "ok" if all(s["success"] for s in splits.values()) else "FAILED"
        sizes = ", ".join(f"{k} {v['questions']}" for k, v in splits.items())
        prep = data["prepared"][task]
        lines.append(f"{task}: validation {verdict} ({sizes}); users {prep['users']}; "
                     f"populations {prep['populations']}")
    lines.append("outputs: data/raw, data/prepared, validation reports + Data Docs in data/validation")
    return "\n".join(lines)


@flow(name="pipeline", log_prints=True)
def pipeline(repo: str = ".", push: bool = True) -> dict:
    data = data_flow(repo=repo, push=push)
    return {"data": data, "text": _summarise(data)}
