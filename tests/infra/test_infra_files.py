"""Every deployment file in infra/ is parsed and checked (Docker is not available here),
and the loopback scripts of infra/local/ are started for real."""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE_VAR = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def test_kubernetes_gpu_job_template_references_exactly_its_variables():
    import jsonschema

    template = json.loads((INFRA / "k8s" / "gpu-base-job-template.json").read_text())
    jsonschema.Draft7Validator.check_schema(template["variables"])
    declared = set(template["variables"]["properties"])
    used = {m for s in _strings(template["job_configuration"]) for m in TEMPLATE_VAR.findall(s)}
    assert used == declared, (used - declared, declared - used)   # unreferenced variables are silently dropped
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert template["variables"]["properties"]["gpu_count"]["default"] >= 1
    jsonschema.validate({"gpu_count": 2, "image": "x", "env": {"A": "b"}}, template["variables"])


def test_docker_compose_stack_is_consistent():
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "s3", "mlflow", "prefect-server", "worker"} <= set(services)
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    text = (INFRA / "docker-compose.yml").read_text()
    for name, default in re.findall(r"\$\{([A-Z_]+)(:[-?][^}]*)?\}", text):
        assert default or name in example, f"${{{name}}} has no default and is not in .env.example"
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (INFRA / src).exists(), f"{name} mounts missing {src}"
            elif not src.startswith(("$", "/")):
                assert src in compose["volumes"], f"{name} uses undeclared volume {src}"
        if "build" in svc:
            assert (INFRA / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
    assert "--artifacts-destination s3://" in services["mlflow"]["command"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.gpu-worker", "Dockerfile.worker"])
def test_dockerfiles_install_with_the_lock(dockerfile):
    lines = [line.strip() for line in (INFRA / "docker" / dockerfile).read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0].startswith("FROM ")
    text = "\n".join(lines)
    for src in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for item in src.split():
            assert (ROOT / item).exists(), f"{dockerfile} copies missing {item}"
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), flags=re.M).group(1)
    assert f"torch=={pinned}" in text and "-c " in text
    if "gpu" in dockerfile:
        assert "nvidia/cuda" in lines[0] and "/whl/cu" in text


def test_prefect_yaml_deployments_point_at_real_flows():
    import importlib

    spec = yaml.safe_load((INFRA / "prefect.yaml").read_text())
    for dep in spec["deployments"]:
        path, func = dep["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert hasattr(getattr(module, func), "deploy"), f"{dep['entrypoint']} is not a Prefect flow"
        for sched in dep.get("schedules", []):
            assert len(sched["cron"].split()) == 5
        assert dep["work_pool"]["name"]
    names = {d["name"] for d in spec["deployments"]}
    assert {"nightly", "nightly-gpu", "pipeline"} <= names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(script: str, port: int, url: str, tmp_path: Path, **env):
    log = tmp_path / f"{script}.log"
    proc = subprocess.Popen(["bash", str(INFRA / "local" / script)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env={**os.environ, "PORT": str(port),
                                                           "PYTHON": sys.executable, **env})
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{script} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc
        except urllib.error.HTTPError:
            return proc                                      # it answers (moto: 4xx on /)
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"{script} did not answer at {url}: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_local_scripts_start_s3_mlflow_and_prefect_on_loopback(tmp_path, monkeypatch):
    from components.storage.s3 import S3Location, ensure_bucket, list_keys

    procs = []
    try:
        s3_port, ml_port, pf_port = _free_port(), _free_port(), _free_port()
        procs.append(_serve("s3-server.sh", s3_port, f"http://127.0.0.1:{s3_port}/", tmp_path))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        assert ensure_bucket(S3Location("probe", endpoint_url=f"http://127.0.0.1:{s3_port}"))
        assert list_keys(S3Location("probe", endpoint_url=f"http://127.0.0.1:{s3_port}")) == []
        procs.append(_serve("mlflow-server.sh", ml_port, f"http://127.0.0.1:{ml_port}/health", tmp_path,
                            STATE=str(tmp_path / "mlflow")))
        procs.append(_serve("prefect-server.sh", pf_port, f"http://127.0.0.1:{pf_port}/api/health", tmp_path,
                            PREFECT_HOME=str(tmp_path / "prefect")))
        assert (tmp_path / "mlflow" / "mlflow.db").exists()
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
