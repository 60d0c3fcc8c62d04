"""Prefect flows: thin orchestration over `components/`.

Prefect and the caches keep their state in the state directory of the repository the
command runs on (`components/storage/state.py`: `.state/` there, or `$PERSONA_STATE_DIR`),
so a checkout never writes to the user's home directory and CI starts clean.
"""

import os
from pathlib import Path

from components.storage.state import cache_dir, state_dir

for _key, _value in {
    "PREFECT_HOME": str(state_dir() / "prefect"),
    "PERSONA_VECTOR_CACHE": str(cache_dir("vectors")),
    "PERSONA_CONTEXT_CACHE": str(cache_dir("contexts")),
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
