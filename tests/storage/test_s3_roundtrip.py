"""S3 for real, on loopback only: a moto S3 server, an `mlflow server` whose artifact store
is a bucket on it, a training flow run against that server, `dvc push` to an S3 remote,
`dvc pull` in a fresh clone, and the champion loaded by alias from a second process.
Credentials must not leak into MLflow params, tags, artifacts, DVC config or logs."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from components.storage.dvc import run_dvc
from components.storage.s3 import S3Location, StorageError, configure_dvc_remote, ensure_bucket, list_keys

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Do-Not-Leak-7f3a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    yield endpoint
    server.stop()


def test_unreachable_endpoint_fails_clearly_after_bounded_retries(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    endpoint = f"http://127.0.0.1:{_free_port()}"                     # nothing listens there
    start = time.perf_counter()
    with pytest.raises(StorageError, match=f"cannot reach S3 at {endpoint}"):
        ensure_bucket(S3Location("b", endpoint_url=endpoint), attempts=2)
    assert time.perf_counter() - start < 30


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def _start_mlflow_server(tmp_path: Path, endpoint: str) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": endpoint, "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = tmp_path / "mlflow-server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
         "--artifacts-destination", "s3://mlflow-artifacts/proxied", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url, log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_mlflow_server_on_s3_dvc_push_pull_and_champion_from_a_second_process(
        tmp_path, synth_root, s3_server, monkeypatch, caplog):
    import mlflow

    from components.backbone.train import train_and_register
    from components.config import load_profile
    from components.tracking import registry
    from tests.evaluation.test_run import tiny_repo

    ensure_bucket(S3Location("mlflow-artifacts", endpoint_url=s3_server))
    proc, url, server_log = _start_mlflow_server(tmp_path, s3_server)
    try:
        # --- a training flow against the server; artifacts go through it to the bucket -------
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        repo = tiny_repo(tmp_path, synth_root)
        (repo / "dvc.lock").unlink()
        _git(repo, "config", "user.email", "t@example.com")
        _git(repo, "config", "user.name", "t")
        reg = train_and_register("LaMP-2", load_profile("demo", repo / "params.yaml"), repo, progress=False)
        name, version = reg["name"], reg["version"]
        registry.record_validation(name, version, "LaMP-2", {"accuracy": 0.5, "f1": 0.4}, "time/dev")
        assert registry.promote(name).promoted
        keys = list_keys(S3Location("mlflow-artifacts", "proxied", s3_server))
        assert any(k.endswith(".safetensors") for k in keys), keys[:10]

        # --- DVC: push the prepared data to an S3 remote, pull it in a fresh clone ----------------
        run_dvc("init", "-q", repo=repo)
        run_dvc("add", "data/prepared", repo=repo)
        configure_dvc_remote(repo, S3Location("dvc-remote", "lamp", s3_server))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "data on s3")
        run_dvc("push", repo=repo)
        assert list_keys(S3Location("dvc-remote", "lamp", s3_server))
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        assert not (clone / "data/prepared").exists()
        run_dvc("pull", repo=clone)
        original = sorted(p.relative_to(repo) for p in (repo / "data/prepared").rglob("*") if p.is_file())
        pulled = sorted(p.relative_to(clone) for p in (clone / "data/prepared").rglob("*") if p.is_file())
        assert pulled == original
        assert all((clone / p).read_bytes() == (repo / p).read_bytes() for p in original)

        # --- the champion by alias, from a second process with no S3 credentials (proxied) ----
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(MLFLOW_TRACKING_URI=url, PYTHONPATH=str(ROOT))
        code = ("import mlflow, pandas as pd; m = mlflow.pyfunc.load_model('models:/%s@champion'); "
                "print('ANSWER', m.predict(pd.DataFrame([{'prompt': 'description: guku'}]))[0] is not None)" % name)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert "ANSWER True" in out.stdout, out.stderr[-3000:]

        # --- no credential anywhere -----------------------------------------------------------
        client = mlflow.MlflowClient()
        run = client.get_run(reg["run_id"])
        mv = client.get_model_version(name, version)
        blobs = [json.dumps(run.data.params), json.dumps(run.data.tags), json.dumps(mv.tags),
                 (repo / ".dvc" / "config").read_text(), server_log.read_text(), caplog.text, out.stdout, out.stderr]
        artifacts = Path(mlflow.artifacts.download_artifacts(run_id=reg["run_id"], dst_path=str(tmp_path / "dl")))
        blobs += [p.read_bytes().decode("utf-8", "ignore") for p in artifacts.rglob("*")
                  if p.is_file() and p.stat().st_size < 5_000_000]
        assert not [b for b in blobs if SECRET in b]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_missing_credentials_are_named(s3_server, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(StorageError, match="no S3 credentials"):
        ensure_bucket(S3Location("b", endpoint_url=s3_server), attempts=1)


def test_unreachable_mlflow_server_fails_clearly(monkeypatch, tmp_path):
    from components.tracking.mlflow_tracking import TrackingUnavailable, configure

    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(TrackingUnavailable, match=f"cannot reach the MLflow server at {uri} after 2 attempts"):
        configure(tmp_path, attempts=2, backoff=0.1)


def test_direct_artifacts_on_s3_with_a_local_store(s3_server, monkeypatch, tmp_path):
    import mlflow

    from components.tracking.mlflow_tracking import configure, experiment

    ensure_bucket(S3Location("mlflow-artifacts", endpoint_url=s3_server))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("PERSONA_MLFLOW_ARTIFACTS", "s3://mlflow-artifacts/direct")
    configure(tmp_path)
    experiment("LaMP-2", tmp_path)
    with mlflow.start_run():
        mlflow.log_text("hello", "notes/hello.txt")
    keys = list_keys(S3Location("mlflow-artifacts", "direct/lamp-LaMP-2", s3_server))
    assert any(k.endswith("notes/hello.txt") for k in keys)


class _Holder(__import__("mlflow").pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.mark.slow
@pytest.mark.parametrize("store", ["local database, artifacts on S3", "tracking server, artifacts proxied to S3"])
def test_purged_versions_leave_nothing_on_s3_and_the_audit_reads_the_store(store, s3_server, monkeypatch, tmp_path):
    """A registered version holding a user's row, purged: its artifacts are gone from the S3
    bucket itself (an independent listing agrees), and the audit, which reads what the store
    holds rather than what the registry lists, finds it before and not after."""
    import mlflow

    from components.lifecycle.audit import Needles, scan_tracking_store
    from components.lifecycle.models import purge_versions
    from components.tracking.mlflow_tracking import configure, experiment

    ensure_bucket(S3Location("mlflow-artifacts", endpoint_url=s3_server))
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server)
    proc = None
    if store.startswith("tracking server"):
        proc, url, _ = _start_mlflow_server(tmp_path, s3_server)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        prefix = "proxied"
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
        monkeypatch.setenv("PERSONA_MLFLOW_ARTIFACTS", "s3://mlflow-artifacts/direct")
        prefix = "direct"
    try:
        configure(tmp_path)
        experiment("LaMP-2", tmp_path)
        population = tmp_path / "population"
        population.mkdir()
        (population / "users.json").write_text(json.dumps({"users": ["u000042", "u000043"]}))
        with mlflow.start_run():
            mlflow.log_text("trained on u000042", "notes.txt")
            mlflow.pyfunc.log_model(name="tap_per", python_model=_Holder(), artifacts={"population": str(population)},
                                    registered_model_name="tap-per-LaMP-2-p0")
        needles = Needles("u000042", [])
        on_s3 = lambda: [k for k in list_keys(S3Location("mlflow-artifacts", prefix, s3_server))  # noqa: E731
                         if needles.find(boto3_get(s3_server, k))]
        assert len(on_s3()) == 2 and scan_tracking_store(needles, tmp_path)
        purge_versions("tap-per-LaMP-2-p0", ["1"])
        assert not on_s3() and not scan_tracking_store(needles, tmp_path)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def boto3_get(endpoint: str, key: str) -> bytes:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint).get_object(Bucket="mlflow-artifacts", Key=key)["Body"].read()
