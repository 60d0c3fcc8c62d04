#!/usr/bin/env bash
# README command (a): set up, then run the main job (the full pipeline) on the active
# profile of params.yaml (the embedded `demo` by default) and print its summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec persona pipeline "$@"
