"""SIGTERM → a clean stop; SIGUSR1 → a stop after the epoch in progress (its checkpoint written).

The handlers only set a flag; the training loop and the pipeline check it at safe points and raise there.
Raising from the handler itself is unreliable: the signal may land in a garbage-collector callback, where
Python prints the exception and drops it.

- SIGTERM is checked between two batches (:func:`check`) and between stages: the run stops at once,
  marked KILLED; its last checkpoint is that of the last finished epoch.
- SIGUSR1 (Slurm's ``--signal=USR1@SECONDS`` before a job's time limit), or the file named by
  ``$METHODO_STOP_FILE`` appearing (the batch script of ``methodo slurm`` creates it: it reaches every
  node of a job through the shared file system), is checked once per epoch (:func:`stop_requested`),
  after the epoch's checkpoint: the run stops there and its requeued job resumes from that checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading

from methodo.errors import Terminated

_requested: int | None = None
_stop: int | None = None
STOP_FILE_ENV = "METHODO_STOP_FILE"


def _handler(signum, frame) -> None:
    global _requested
    _requested = signum


def _stop_handler(signum, frame) -> None:
    global _stop
    _stop = signum


def install():
    """Install the flagging SIGTERM and SIGUSR1 handlers (main thread only); returns the previous ones."""
    global _requested, _stop
    _requested = _stop = None
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _handler), signal.signal(signal.SIGUSR1, _stop_handler)


def restore(previous) -> None:
    global _requested, _stop
    _requested = _stop = None
    if previous is not None:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGUSR1, previous[1])


def check() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived since :func:`install`."""
    if _requested is not None:
        raise Terminated(f"received signal {_requested} (SIGTERM)")


def stop_requested() -> bool:
    """True when SIGUSR1 arrived since :func:`install`, or the file ``$METHODO_STOP_FILE`` exists
    (one ``stat`` per epoch)."""
    if _stop is not None:
        return True
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


def stop_reason() -> str:
    if _stop is not None:
        return "SIGUSR1"
    return f"stop file {os.environ.get(STOP_FILE_ENV)}"
