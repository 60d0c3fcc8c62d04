"""Resumable training: a training's whole state (weights, optimizer, random generators,
position) saved atomically every few steps under the state directory. A retry of the same
training (same settings, data and backbone: the same path) resumes where the killed one
stopped and ends with the same weights as an uninterrupted run; a finished training
removes its checkpoint.

On a stop request (`components/stopping.py`) the training saves its checkpoint at its next
step and stops.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from components.stopping import stop_if_requested, stop_requested

log = logging.getLogger(__name__)


def checkpoint_path(repo: str | Path, name: str, *parts: str | bytes) -> Path:
    """`.state/checkpoints/<name>-<hash of parts>.pt`: any change of a part starts afresh."""
    from components.storage.state import state_dir

    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
        digest.update(b"\0")
    return state_dir(repo) / "checkpoints" / f"{name}-{digest.hexdigest()[:16]}.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)                       # a kill mid-write never leaves a torn checkpoint


class Checkpoints:
    """Every `every` steps, `save(step, state)` writes `state()` to `path`; `restore()` reads
    what a killed run left; `clear()` after success. `path` None: all of it is off."""

    def __init__(self, path: Path | None, every: int, is_main: bool = True):
        self.path, self.every, self.is_main = path, every, is_main

    def restore(self) -> dict | None:
        import torch

        if self.path is None or not self.path.exists():
            return None
        log.info("resuming the training from %s", self.path)
        return torch.load(self.path, weights_only=False)

    def save(self, step: int, state: Callable[[], dict]) -> None:
        """After step `step`: saves when due or when a stop was requested, then stops if asked."""
        if self.path is not None and self.is_main and (step % self.every == 0 or stop_requested()):
            save_checkpoint(self.path, state())
        stop_if_requested()

    def clear(self) -> None:
        if self.path is not None and self.is_main:
            self.path.unlink(missing_ok=True)
