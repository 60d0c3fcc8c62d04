"""Backbone registration and one tracked evaluation against a real MLflow (SQLite) store."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.config import load_profile
from components.lamp.splits import PrepareConfig, prepare_task
from tests.tiny_models import tiny_reader

ROOT = Path(__file__).resolve().parents[2]

TINY_EMBEDDED = {"max_length": 256, "steps": 3, "batch_size": 4, "warmup_steps": 1}


def use_tiny_backbone(profile: dict) -> None:
    """A params.yaml profile whose embedded backbone is a few steps on an untrained one-layer reader."""
    profile["backbone"]["embedded"].update(TINY_EMBEDDED)
    profile["backbone"]["reader"]["path"] = str(tiny_reader())


def tiny_repo(tmp_path: Path, synth_root: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    demo = params["profiles"]["demo"]
    demo["tasks"] = ["LaMP-2"]
    use_tiny_backbone(demo)
    demo["evaluation"]["methods"] = ["non-personalized", "bm25-2"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    prepare_task("LaMP-2", synth_root / "LaMP-2", repo / "data" / "prepared" / "LaMP-2", PrepareConfig(5))
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_register_backbone_then_tracked_evaluation(tmp_path, synth_root, mlflow_store):
    import mlflow

    from components.backbone.train import train_and_register
    from components.evaluation.run import EvalRequest, run_evaluation

    repo = tiny_repo(tmp_path, synth_root)
    profile = load_profile("demo", repo / "params.yaml")
    reg = train_and_register("LaMP-2", profile, repo, progress=False)
    assert reg["model_uri"] == "models:/backbone-LaMP-2/1"
    version = mlflow.MlflowClient().get_model_version("backbone-LaMP-2", "1")
    assert version.tags["data_version"] and version.tags["git_commit"]

    shutil.rmtree(repo / ".state" / "backbones")             # force the registry download path
    smoke = EvalRequest(method="bm25-2", task="LaMP-2", split="time/test", limit=8, batch_size=4)
    run_evaluation(smoke, "demo", repo, reports=repo / "reports", progress=False)
    assert not (repo / "reports" / "summary.json").exists()   # part of a split is not a standing
    req = EvalRequest(method="bm25-2", task="LaMP-2", split="time/test", batch_size=16)
    out = run_evaluation(req, "demo", repo, reports=repo / "reports", progress=False)
    run = mlflow.get_run(out["mlflow_run_id"])
    for tag in ("git_commit", "data_version", "backbone", "method", "split"):
        assert run.data.tags[tag], tag
    assert run.data.tags["backbone"] == "models:/backbone-LaMP-2/1"
    assert {"accuracy", "f1", "context_tokens_mean", "context_tokens_p95", "prompt_tokens_mean",
            "wall_seconds", "examples_per_second", "peak_rss_mb"} <= set(run.data.metrics)
    artifacts = mlflow.MlflowClient().list_artifacts(run.info.run_id, "predictions")
    assert [a.path for a in artifacts] == ["predictions/bm25-2__time-test.json"]

    summary = json.loads((repo / "reports" / "summary.json").read_text())
    entry = summary["tasks"]["LaMP-2"]["methods"]["bm25-2"]
    assert summary["profile"] == "demo" and summary["tasks"]["LaMP-2"]["primary_metric"] == "accuracy"
    assert set(entry) >= {"metrics", "context_tokens_mean", "per_user_params", "latency_ms_per_example",
                          "mlflow_run_id"}
    assert entry["mlflow_run_id"] == out["mlflow_run_id"]
    full = repo / "reports" / "predictions" / "LaMP-2" / "bm25-2__time-test.json"
    before = full.read_bytes()
    run_evaluation(smoke, "demo", repo, reports=repo / "reports", progress=False)
    assert full.read_bytes() == before                        # the smoke run wrote beside it
    assert (full.parent / "bm25-2__time-test__first8.json").exists()
    assert json.loads((repo / "reports" / "summary.json").read_text()) == summary


def test_missing_split_is_a_clear_error(tmp_path, synth_root):
    from components.lamp.splits import split_files

    repo = tiny_repo(tmp_path, synth_root)
    with pytest.raises(FileNotFoundError, match="run `dvc repro` first"):
        split_files("LaMP-2", "time/nope", repo / "data")
    with pytest.raises(ValueError, match="<kind>/<split>"):
        split_files("LaMP-2", "test", repo / "data")
