"""Cache keys for Prefect tasks: data version + settings hash + code version.

Tasks return small dicts (URIs, metrics), persisted by Prefect; a key that did not
change means the task's inputs did not change, so its stored result is reused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_version(*paths: str) -> str:
    """Hash of the Python sources under `paths` (relative to the repository root)."""
    digest = hashlib.sha256()
    for rel in paths:
        p = ROOT / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            digest.update(str(f.relative_to(ROOT)).encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def input_cache_key(*names: str):
    """A Prefect `cache_key_fn` over the named task parameters."""

    def key(context, parameters: dict) -> str:
        fn = context.task.name
        parts = [fn] + [f"{n}={parameters[n]}" for n in names]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    return key
