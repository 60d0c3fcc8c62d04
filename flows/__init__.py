"""Prefect flows: thin orchestration over `components/`.

Prefect keeps its state under the repository's `.state/` unless told otherwise, so a
checkout never writes to the user's home directory and CI starts clean.
"""

import os
from pathlib import Path

_STATE = Path(os.environ.get("PERSONA_STATE_DIR", Path(__file__).resolve().parent.parent / ".state"))
for _key, _value in {
    "PREFECT_HOME": str(_STATE / "prefect"),
    "PERSONA_VECTOR_CACHE": str(_STATE / "vectors"),
    "PERSONA_CONTEXT_CACHE": str(_STATE / "contexts"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
    "GX_ANALYTICS_ENABLED": "False",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}.items():
    os.environ.setdefault(_key, _value)

Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
