"""A training killed mid-way resumes from its last checkpoint and ends with the same
weights as an uninterrupted run (the backbone trainer, run as `python -m ...`)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.evaluation.test_run import tiny_repo

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_killed_training_resumes_from_its_checkpoint(tmp_path, synth_root):
    import mlflow

    repo = tiny_repo(tmp_path, synth_root)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profiles"]["demo"]["backbone"]["embedded"].update({"steps": 400})
    params["profiles"]["demo"]["backbone"]["checkpoint_every"] = 25
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "components.backbone.train", "--task", "LaMP-2", "--repo", str(repo), "--no-progress"]
    checkpoints = repo / ".state" / "checkpoints"

    victim = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list(checkpoints.glob("*.pt")) and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)                        # killed mid-training, no cleanup
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "training finished before it could be killed"
    saved = list(checkpoints.glob("*.pt"))
    assert saved and not list(checkpoints.glob(".*tmp*"))      # one complete checkpoint, no torn file
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert not client.search_registered_models()              # nothing registered half-way

    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming LaMP-2 backbone training at step" in resumed.stderr
    step = int(resumed.stderr.split("training at step ")[1].split("/")[0])
    assert 0 < step < 402
    assert not list(checkpoints.glob("*.pt"))                  # removed once registered

    fresh = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert "resuming" not in fresh.stderr
    resumed_sum = json.loads(resumed.stdout.strip().splitlines()[-1])["checksum"]
    fresh_sum = json.loads(fresh.stdout.strip().splitlines()[-1])["checksum"]
    assert resumed_sum == pytest.approx(fresh_sum, rel=1e-9)   # the same weights as an uninterrupted run
