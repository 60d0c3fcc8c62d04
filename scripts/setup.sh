#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with the pinned stack.
# Re-running is a no-op unless pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
stamp=.venv/.persona-installed
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing the pinned stack (constraints.txt); this takes a few minutes once"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "[setup] DVC needs a git checkout: run from a clone of the repository" >&2
  exit 1
fi
