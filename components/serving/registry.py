"""Register the serving model `serve-<method>`, and run the server that answers for it.

The serving model has no weights of its own: it resolves the method's registered models
(population champions, Attn-GS marker/compressor, the backbone) when it loads, so a new
champion is served without re-registering. A new version is registered only when the
code or the settings it was registered with change; it gets `champion` at once (there is
nothing to validate that the models it routes to have not already been validated on).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import sys
from pathlib import Path

log = logging.getLogger(__name__)

SERVING_PIP_REQUIREMENTS = ["torch==2.13.0", "transformers>=5.23,<6", "peft>=0.21,<0.22", "safetensors",
                            "pandas", "pyyaml", "pydantic>=2"]


def serving_model_name(method: str) -> str:
    """`serve-tap-per`, `serve-attn-gs-8` (registry names cannot hold `@`)."""
    return "serve-" + re.sub(r"[^A-Za-z0-9-]+", "-", method)


def register_serving_model(method: str, repo: str | Path = ".", profile_name: str | None = None,
                           batch_size: int = 16) -> dict:
    import mlflow

    from components.config import load_profile
    from components.methods import UnknownMethodError
    from components.methods.attn_gs.registry import parse_name
    from components.methods.baselines import make_baseline
    from components.methods.populations import POPULATION_METHODS
    from components.tracking import mlflow_tracking, registry

    if method not in POPULATION_METHODS and parse_name(method) is None:
        try:
            make_baseline(method)
        except ValueError as exc:
            raise UnknownMethodError(str(exc)) from None
    repo = Path(repo).resolve()
    profile = load_profile(profile_name, repo / "params.yaml")
    mlflow_tracking.configure(repo)
    name = serving_model_name(method)
    config = {"method": method, "repo": str(repo), "profile": profile.name, "batch_size": batch_size}
    code = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(repr(sorted(config.items())).encode())
    for f in sorted(code.rglob("*.py")):
        digest.update(f.read_bytes())
    fingerprint = digest.hexdigest()[:16]
    client = mlflow.MlflowClient()
    for v in client.search_model_versions(f"name='{name}'"):
        if v.tags.get("serving_fingerprint") == fingerprint:
            client.set_registered_model_alias(name, registry.CHAMPION, v.version)
            return {"name": name, "version": str(v.version), "model_uri": f"models:/{name}@champion", "new": False}
    mlflow_tracking.experiment("serving", repo)
    tags = mlflow_tracking.standard_tags(repo, kind="serving", method=method, serving_fingerprint=fingerprint)
    with mlflow.start_run(run_name=f"register-{name}", tags=tags):
        mlflow.log_params(config)
        info = mlflow.pyfunc.log_model(name="serving", python_model=str(Path(__file__).with_name("model.py")),
                                       code_paths=[str(code)], pip_requirements=SERVING_PIP_REQUIREMENTS,
                                       registered_model_name=name, model_config=config)
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, registry.CHAMPION, version)
    log.info("registered %s version %s (champion)", name, version)
    return {"name": name, "version": version, "model_uri": f"models:/{name}@champion", "new": True}


def serve_env(model_uri: str, base: dict | None = None, max_rows: int | None = None,
              max_bytes: int | None = None) -> dict:
    """The server's environment: the model it serves and its request limits
    (`components/serving/app.py`)."""
    import os

    env = dict(os.environ if base is None else base)
    env["PERSONA_SERVE_MODEL"] = model_uri
    for key, value in (("PERSONA_SERVE_MAX_ROWS", max_rows), ("PERSONA_SERVE_MAX_BYTES", max_bytes)):
        if value is not None:
            env[key] = str(value)
    return env


def serve_command(host: str = "127.0.0.1", port: int = 5005, workers: int = 1) -> list[str]:
    """uvicorn with the scoring app of `components/serving/app.py`, in this interpreter."""
    return [sys.executable, "-m", "uvicorn", "--factory", "components.serving.app:create_app", "--host", host,
            "--port", str(port), "--workers", str(workers)]


def run_server(cmd: list[str], env: dict, grace: float = 30.0) -> int:
    """Run the server in a process group of its own and pass SIGTERM/SIGINT on to all of it
    (uvicorn and its workers): stopping `persona serve` stops everything it started. Members
    still there `grace` seconds after the signal are killed."""
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def forward(signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                forward(signal.SIGINT, None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
