#!/usr/bin/env bash
# An S3-compatible server (moto, in memory) on loopback, for development and tests.
#   PORT=5055 bash infra/local/s3-server.sh
# then: persona storage s3 --endpoint-url http://127.0.0.1:5055 --dvc-url s3://dvc-remote/lamp \
#                          --mlflow-url s3://mlflow-artifacts/lamp
# Credentials: any AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY pair (moto does not check them).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
PORT="${PORT:-5055}"
echo "S3 (moto) on http://127.0.0.1:$PORT  (in memory: stopping it loses the buckets)"
exec "$PY" -m moto.server -H 127.0.0.1 -p "$PORT"
