"""Where the platform keeps its state, one rule for every component and command:
`$PERSONA_STATE_DIR` if set, else `.state/` in the repository the command runs on (the
working directory for the CLI and the flows), never the folder the package was installed
from. It holds the MLflow database and artifacts (unless `MLFLOW_TRACKING_URI` names
another store), Prefect's home, the vector and context caches, checkpoints, downloaded
backbones and temporaries.

`PERSONA_VECTOR_CACHE` and `PERSONA_CONTEXT_CACHE` still move one cache elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

CACHE_VARIABLES = {"vectors": "PERSONA_VECTOR_CACHE", "contexts": "PERSONA_CONTEXT_CACHE"}


def state_dir(repo: str | Path = ".") -> Path:
    env = os.environ.get("PERSONA_STATE_DIR")
    return Path(env).resolve() if env else Path(repo).resolve() / ".state"


def cache_dir(kind: str, repo: str | Path = ".") -> Path:
    """The `vectors` or `contexts` cache of the repository (or where its variable points)."""
    env = os.environ.get(CACHE_VARIABLES[kind])
    return Path(env) if env else state_dir(repo) / kind


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_temporaries(repo: str | Path = ".") -> list[Path]:
    """Remove temporaries left by processes that no longer run (a `kill -9` skips every
    cleanup); each temporary's name carries its owner's process id."""
    removed = []
    root = state_dir(repo) / "tmp"
    for path in sorted(root.glob("*-pid*-*")) if root.exists() else []:
        try:
            pid = int(path.name.rsplit("-pid", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def make_temporary(prefix: str, repo: str | Path = ".") -> Path:
    """A fresh folder under the state directory's `tmp/` (the caller removes it; if the
    process is killed, the next `sweep_temporaries` does): temporaries that may hold users'
    data stay where forgetting and the audit look, not in the system's /tmp."""
    root = state_dir(repo) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(repo)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-pid{os.getpid()}-", dir=root))


@contextlib.contextmanager
def temporary(prefix: str, repo: str | Path = ".") -> Iterator[Path]:
    """`make_temporary`, removed when the block ends."""
    path = make_temporary(prefix, repo)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
