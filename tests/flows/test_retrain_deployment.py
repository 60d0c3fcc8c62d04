"""Scheduled retraining for real: a `prefect server` on 127.0.0.1, the `nightly` deployment
of infra/prefect.yaml deployed with the Prefect CLI, a process worker, a run triggered
with `prefect deployment run`, and a new challenger in MLflow afterwards."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.evaluation.test_run import use_tiny_backbone

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _repo(path: Path) -> Path:
    """A checkout of this project with tiny settings, its own git and DVC, a local DVC remote."""
    path.mkdir()
    for item in ("components", "flows", "infra"):
        shutil.copytree(ROOT / item, path / item, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", path)
    (path / "data").mkdir()
    shutil.copy(ROOT / "data" / "forgotten.json", path / "data")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    demo = params["profiles"]["demo"]
    demo["tasks"] = ["LaMP-2"]
    demo["data"]["synth"]["users"] = 30
    demo["prepare"]["oppu_top_users"] = 5
    use_tiny_backbone(demo)
    demo["tap_per"].update({"epochs": 1, "prefix_length": 2})
    (path / "params.yaml").write_text(yaml.safe_dump(params))
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "t"]):
        subprocess.run(["git", *args], cwd=path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=path, check=True)
    return path


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer: {log.read_text()[-3000:]}")


def test_deployed_retrain_flow_runs_on_a_worker_and_registers_a_challenger(tmp_path):
    repo = _repo(tmp_path / "repo")
    port = _free_port()
    env = {**os.environ,
           "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PERSONA_STATE_DIR": str(tmp_path / "state"),
           "PYTHONPATH": str(repo)}
    prefect = [sys.executable, "-m", "prefect"]
    log = tmp_path / "server.log"
    server = subprocess.Popen([*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    worker = None
    try:
        _wait(f"http://127.0.0.1:{port}/api/health", server, log)

        def cli(*args, **kw):
            out = subprocess.run([*prefect, *args], cwd=repo, env=env, capture_output=True, text=True,
                                 timeout=kw.get("timeout", 300))
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            return out.stdout

        cli("work-pool", "create", "cpu", "--type", "process")
        cli("--no-prompt", "deploy", "--prefect-file", "infra/prefect.yaml", "--name", "nightly")
        ran = cli("deployment", "run", "retrain/nightly", "--param", 'methods=["tap-per"]')
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", ran).group(1)
        wlog = tmp_path / "worker.log"
        worker = subprocess.Popen([*prefect, "worker", "start", "--pool", "cpu", "--run-once"], cwd=repo,
                                  env=env, stdout=wlog.open("w"), stderr=subprocess.STDOUT)
        worker.wait(timeout=900)
        state = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/flow_runs/{flow_run_id}", timeout=10).read())["state"]
        assert state["type"] == "COMPLETED", wlog.read_text()[-5000:]

        import mlflow

        client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        models = [m.name for m in client.search_registered_models() if m.name.startswith("tap-per-LaMP-2-")]
        assert models
        for name in models:
            challenger = client.get_model_version_by_alias(name, "challenger")
            assert json.loads(challenger.tags["validation_metrics"])["accuracy"] >= 0
            assert client.get_model_version_by_alias(name, "champion").version == challenger.version
        schedule = yaml.safe_load((repo / "infra" / "prefect.yaml").read_text())["deployments"][0]["schedules"]
        assert schedule[0]["cron"] == "0 3 * * *"
    finally:
        for proc in (worker, server):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
