#!/usr/bin/env bash
# A Prefect server on loopback (SQLite under .state/), needed by workers and deployments.
#   PORT=4200 bash infra/local/prefect-server.sh
# then: export PREFECT_API_URL=http://127.0.0.1:4200/api
#       prefect work-pool create cpu --type process
#       prefect --no-prompt deploy --all --prefect-file infra/prefect.yaml
#       prefect worker start --pool cpu
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PORT="${PORT:-4200}"
export PREFECT_HOME="${PREFECT_HOME:-$ROOT/.state/prefect-server}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$PREFECT_HOME"
echo "Prefect server on http://127.0.0.1:$PORT  (home $PREFECT_HOME)"
exec "$PY" -m prefect server start --host 127.0.0.1 --port "$PORT"
