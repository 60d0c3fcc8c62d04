"""Per-population training (TAP-PER, PPlug) as a Prefect fan-out with MLflow registration."""

import pytest
import yaml

from tests.evaluation.test_run import tiny_repo

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("method", ["tap-per", "pplug"])
def test_one_registered_model_per_population(method, tmp_path, synth_root, prefect_api, monkeypatch):
    import mlflow
    import pandas as pd

    from components.backbone.train import train_and_register
    from components.config import load_profile
    from flows.populations import train_limited

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    repo = tiny_repo(tmp_path, synth_root)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profiles"]["demo"]["tap_per"].update({"epochs": 1, "prefix_length": 2, "max_parallel": 1})
    params["profiles"]["demo"]["pplug"].update({"epochs": 1, "max_history": 8})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    backbone = train_and_register("LaMP-2", load_profile("demo", repo / "params.yaml"), repo, progress=False)
    out = train_limited(method, {"LaMP-2": backbone}, repo=str(repo))
    pops = sorted(yaml.safe_load((repo / "data/prepared/LaMP-2/populations.json").read_text())["sizes"])
    assert sorted(out) == [f"LaMP-2/{p}" for p in pops]
    client = mlflow.MlflowClient()
    for key, reg in out.items():
        version = client.get_model_version(reg["name"], reg["version"])
        assert reg["name"] == f"{method}-LaMP-2-{key.split('/')[1]}"
        assert version.tags["backbone"] == backbone["model_uri"] and version.tags["data_version"]
    # a registered population model answers from a second load through MLflow
    first = next(iter(out.values()))
    model = mlflow.pyfunc.load_model(first["model_uri"])
    user = __import__("components.methods.populations", fromlist=["x"]).population_members(
        "LaMP-2", next(iter(out)).split("/")[1], repo)[0]
    answers = model.predict(pd.DataFrame([{"user_id": user, "input": "description: guku", "profile": []}]))
    assert len(answers) == 1 and isinstance(answers[0], str)
    # an unchanged rerun is served from the task cache: no new model version
    again = train_limited(method, {"LaMP-2": backbone}, repo=str(repo))
    assert {k: r["version"] for k, r in again.items()} == {k: r["version"] for k, r in out.items()}
