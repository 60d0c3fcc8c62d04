#!/usr/bin/env bash
# An MLflow tracking server on loopback: SQLite backend under .state/, artifacts proxied to
# ARTIFACTS (default a local folder; e.g. s3://mlflow-artifacts/lamp with
# MLFLOW_S3_ENDPOINT_URL and AWS credentials for an S3 store such as infra/local/s3-server.sh).
#   PORT=5000 ARTIFACTS=s3://mlflow-artifacts/lamp bash infra/local/mlflow-server.sh
# Clients: export MLFLOW_TRACKING_URI=http://127.0.0.1:$PORT (they need no S3 credentials).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PORT="${PORT:-5000}"
STATE="${STATE:-$ROOT/.state/mlflow-server}"
ARTIFACTS="${ARTIFACTS:-$STATE/artifacts}"
mkdir -p "$STATE"
export MLFLOW_DISABLE_TELEMETRY=true
echo "MLflow server on http://127.0.0.1:$PORT  (store $STATE/mlflow.db, artifacts $ARTIFACTS)"
exec "$PY" -m mlflow server --backend-store-uri "sqlite:///$STATE/mlflow.db" \
  --artifacts-destination "$ARTIFACTS" --host 127.0.0.1 --port "$PORT" --workers 1
