"""Stopping long work on request. `persona` asks on SIGTERM (and a flow whose waiting thread
is interrupted asks its workers): every training or evaluation loop of the process, in any
thread, ends at its next step. A training with checkpoints saves one first, so a rerun resumes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
_stop = threading.Event()


class StopRequested(KeyboardInterrupt):
    """A loop stopped on request. It unwinds like Ctrl-C: no `except Exception` swallows
    it, and Prefect records the task as crashed instead of retrying it."""


def request_stop() -> None:
    """Ask every loop of this process to end at its next step."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_if_requested() -> None:
    """A loop's stop point, after a completed step."""
    if _stop.is_set():
        raise StopRequested("stopped on request")


@contextmanager
def stopping_workers() -> Iterator[None]:
    """Around a wait on worker threads: a signal or Ctrl-C that interrupts the wait asks the
    workers to stop too, so the process exits at their next step instead of after them."""
    try:
        yield
    except Exception:
        raise
    except BaseException:
        log.warning("stopping: running trainings save a checkpoint and end at their next step "
                    "(run the same command again to resume)")
        request_stop()
        raise
