"""The main job end to end on a microscopic config: data -> backbone -> per-population
TAP-PER and PPlug (registered, validated, promoted) -> Attn-GS marker and compressor
(registered) -> evaluation -> report, and a second run that reuses every cached result."""

import json

import pytest
import yaml

from tests.evaluation.test_run import use_tiny_backbone
from tests.flows.test_data_flow import make_repo

pytestmark = pytest.mark.slow


def test_pipeline_end_to_end_then_cached(tmp_path, prefect_api, monkeypatch):
    from flows.pipeline import pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    repo = make_repo(tmp_path / "repo", tmp_path / "remote")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    demo = params["profiles"]["demo"]
    use_tiny_backbone(demo)
    methods = ["non-personalized", "bm25-2", "full-context", "tap-per", "pplug", "attn-gs@6"]
    demo["evaluation"]["methods"] = methods
    demo["tap_per"].update({"epochs": 1, "prefix_length": 2, "max_examples": 40})
    demo["pplug"].update({"epochs": 1, "max_history": 8, "max_examples": 40})
    demo["attn_gs"].update({"marker_steps": 2, "compressor_steps": 2, "train_budgets": [6], "max_train_examples": 16,
                            "max_compressor_questions": 8, "batch_size": 4})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))

    first = pipeline(repo=str(repo), push=False)
    summary = json.loads((repo / "reports" / "summary.json").read_text())
    assert set(summary["tasks"]) == {"LaMP-2", "LaMP-3"}
    for task in ("LaMP-2", "LaMP-3"):
        assert set(summary["tasks"][task]["methods"]) == set(methods)
        assert summary["tasks"][task]["methods"]["tap-per"]["per_user_params"] > 0
        assert summary["tasks"][task]["methods"]["pplug"]["per_user_params"] == 0
        assert (repo / "reports" / f"comparison-{task}.png").stat().st_size > 1000
        assert "| bm25-2 |" in (repo / "reports" / f"comparison-{task}.md").read_text()
        assert summary["tasks"][task]["methods"]["attn-gs@6"]["context_tokens_mean"] <= 6
    assert "## LaMP-3" in first["text"]
    populations = {k: d for k, d in first["promotions"].items() if not k.startswith("attn-gs")}
    assert populations and all(d["promoted"] for d in populations.values())       # first champions
    assert first["promotions"]["attn-gs:LaMP-2:compressor"]["name"] == "attn-gs-compressor-LaMP-2"

    second = pipeline(repo=str(repo), push=False)
    assert second["backbones"] == first["backbones"]            # no retraining
    assert {k: d["version"] for k, d in second["promotions"].items()} == \
        {k: d["version"] for k, d in first["promotions"].items()}          # no population retrained
    assert {k: v["mlflow_run_id"] for k, v in second["evaluations"].items()} == \
        {k: v["mlflow_run_id"] for k, v in first["evaluations"].items()}   # no re-evaluation
