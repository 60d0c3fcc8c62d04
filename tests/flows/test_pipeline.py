"""The main job end to end on a microscopic config: data -> backbone -> evaluation -> report,
and a second run that reuses every cached result."""

import json

import pytest
import yaml

from tests.evaluation.test_run import TINY_EMBEDDED
from tests.flows.test_data_flow import make_repo

pytestmark = pytest.mark.slow


def test_pipeline_end_to_end_then_cached(tmp_path, prefect_api, monkeypatch):
    from flows.pipeline import pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    repo = make_repo(tmp_path / "repo", tmp_path / "remote")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    demo = params["profiles"]["demo"]
    demo["backbone"]["embedded"].update(TINY_EMBEDDED)
    demo["evaluation"]["methods"] = ["non-personalized", "bm25-2", "full-context"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    first = pipeline(repo=str(repo), push=False)
    summary = json.loads((repo / "reports" / "summary.json").read_text())
    assert set(summary["tasks"]) == {"LaMP-2", "LaMP-3"}
    for task in ("LaMP-2", "LaMP-3"):
        assert set(summary["tasks"][task]["methods"]) == {"non-personalized", "bm25-2", "full-context"}
        assert (repo / "reports" / f"comparison-{task}.png").stat().st_size > 1000
        assert "| bm25-2 |" in (repo / "reports" / f"comparison-{task}.md").read_text()
    assert "## LaMP-3" in first["text"]

    second = pipeline(repo=str(repo), push=False)
    assert second["backbones"] == first["backbones"]            # no retraining
    assert {k: v["mlflow_run_id"] for k, v in second["evaluations"].items()} == \
        {k: v["mlflow_run_id"] for k, v in first["evaluations"].items()}   # no re-evaluation
