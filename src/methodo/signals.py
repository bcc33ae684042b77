"""SIGTERM → a clean stop. The handler only sets a flag; the training loop and the pipeline check it
at safe points (every optimizer step, between stages) and raise :class:`Terminated` there. Raising
from the handler itself is unreliable: the signal may land in a garbage-collector callback, where
Python prints the exception and drops it.
"""

from __future__ import annotations

import signal
import threading

from methodo.errors import Terminated

_requested: int | None = None


def _handler(signum, frame) -> None:
    global _requested
    _requested = signum


def install():
    """Install the flagging SIGTERM handler (main thread only); returns the previous handler."""
    global _requested
    _requested = None
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _handler)


def restore(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def check() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived since :func:`install`."""
    if _requested is not None:
        raise Terminated(f"received signal {_requested} (SIGTERM)")
