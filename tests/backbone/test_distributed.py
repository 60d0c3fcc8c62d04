"""Training entry points as `python -m …` and under `torchrun` with 2 CPU processes (gloo):
identical weights on both ranks, the same update as one process, rank 0 alone registers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.evaluation.test_run import tiny_repo

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args, env, nproc=None):
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc else [sys.executable]
    out = subprocess.run([*prefix, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_training_entry_points_run_under_torchrun(tmp_path, synth_root):
    import mlflow

    repo = tiny_repo(tmp_path, synth_root)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profiles"]["demo"]["tap_per"].update({"epochs": 1, "prefix_length": 2, "max_examples": 32})
    params["profiles"]["demo"]["pplug"].update({"epochs": 1, "max_history": 8, "max_examples": 32})
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "OMP_NUM_THREADS": "1", "PERSONA_VECTOR_CACHE": str(tmp_path / "vectors")}
    backbone_args = ["components.backbone.train", "--task", "LaMP-2", "--repo", str(repo), "--no-progress"]

    ranks = _run([*backbone_args, "--result-file", str(tmp_path / "reg.json")], env, nproc=2)
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)    # identical weights
    single = _run(backbone_args, env)                     # the same training in one process
    assert single[0]["checksum"] == pytest.approx(ranks[0]["checksum"], rel=1e-3)   # the same updates
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert len(client.search_model_versions("name='backbone-LaMP-2'")) == 2   # one per run, rank 0 only
    assert json.loads((tmp_path / "reg.json").read_text())["model_uri"] == "models:/backbone-LaMP-2/1"

    pop = yaml.safe_load((repo / "data/prepared/LaMP-2/populations.json").read_text())["sizes"]
    population = sorted(pop)[0]
    for method in ("tap-per", "pplug"):
        _run(["components.methods.populations", "--method", method, "--task", "LaMP-2", "--population",
              population, "--repo", str(repo), "--backbone", "models:/backbone-LaMP-2/1"], env, nproc=2)
        versions = client.search_model_versions(f"name='{method}-LaMP-2-{population}'")
        assert len(versions) == 1                           # registered once, by rank 0
