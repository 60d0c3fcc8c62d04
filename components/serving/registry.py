"""Register the serving model `serve-<method>` and build the `mlflow models serve` command.

The serving model has no weights of its own: it resolves the method's registered models
(population champions, Attn-GS marker/compressor, the backbone) when it loads, so a new
champion is served without re-registering. A new version is registered only when the
code or the settings it was registered with change; it gets `champion` at once (there is
nothing to validate that the models it routes to have not already been validated on).
"""

from __future__ import annotations

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


def serve_env(base: dict | None = None) -> dict:
    """The environment for `mlflow models serve`: it starts `uvicorn` by name, so this
    interpreter's scripts directory goes first on PATH."""
    import os

    env = dict(os.environ if base is None else base)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def serve_command(model_uri: str, host: str = "127.0.0.1", port: int = 5005, workers: int = 1) -> list[str]:
    """`mlflow models serve` in this environment (no conda/virtualenv rebuild)."""
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow) if mlflow.exists() else "mlflow", "models", "serve", "-m", model_uri, "-h", host,
            "-p", str(port), "--env-manager", "local", "-w", str(workers)]
