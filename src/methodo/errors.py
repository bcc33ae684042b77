"""Exceptions that carry methodo's exit-code contract.

``BadInput`` (exit 2) is for anything the user can fix: config, data, arguments.
``RunFailed`` (exit 3) is for a run that started and failed on its own terms (e.g. a
non-finite loss). Anything else is an unexpected failure (exit 1).
"""

from __future__ import annotations


class BadInput(Exception):
    """The user's input is wrong. The message is one line naming the key/file/value and the choices."""

    exit_code = 2


class ConfigError(BadInput):
    """A config key is unknown, mistyped or out of range.

    ``key`` optionally names the offending key relative to the component being checked
    (e.g. ``"momentum"`` inside ``train.optimizer``); the config loader prefixes it.
    """

    def __init__(self, msg: str, *, key: str | None = None):
        super().__init__(msg)
        self.key = key


class DataError(BadInput):
    """A data file or column is missing, unreadable or inconsistent."""


class RunFailed(Exception):
    """The run started and failed (diverged, ...). Its run dir and summary say why."""

    exit_code = 3


def choices(values) -> str:
    """Format allowed values for an error message: ``'a', 'b' or 'c'``."""
    vals = [repr(v) for v in values]
    if not vals:
        return "(none)"
    if len(vals) == 1:
        return vals[0]
    return ", ".join(vals[:-1]) + " or " + vals[-1]


class CheckpointWriteError(RunFailed):
    """A checkpoint could not be written (disk full, file size limit, ...); the previous one is kept."""


class Terminated(BaseException):
    """The process received SIGTERM; raised in the main thread so the run is closed as KILLED."""
