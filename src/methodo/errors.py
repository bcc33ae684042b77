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


def choices(values, *, limit: int = 30) -> str:
    """Format allowed values for an error message: ``'a', 'b' or 'c'`` (at most ``limit`` of them,
    each shortened by :func:`short`, so a CSV with 10000 columns still gives a readable line)."""
    values = list(values)
    vals = [short(v) for v in values[:limit]]
    if not vals:
        return "(none)"
    if len(values) > limit:
        return ", ".join(vals) + f", ... ({len(values)} in all)"
    if len(vals) == 1:
        return vals[0]
    return ", ".join(vals[:-1]) + " or " + vals[-1]


class CheckpointWriteError(RunFailed):
    """A checkpoint could not be written (disk full, file size limit, ...); the previous one is kept."""


class Terminated(BaseException):
    """The process received SIGTERM; raised in the main thread so the run is closed as KILLED."""


class StopRequested(Terminated):
    """Training stopped at the end of an epoch, after its checkpoint, because it was asked to (SIGUSR1, or the
    stop file of a Slurm job near its time limit): the run dir resumes from there (exit code 75, "try again")."""

    exit_code = 75


def short(value, limit: int = 60) -> str:
    """A bounded ``repr`` of a value for an error message.

    The value may be anything a config or a data file holds, including a list expanded from YAML
    aliases: it is never formatted whole. Nested containers are cut after a few items and levels
    (``reprlib``), and what is still longer than ``limit`` characters is shown by its type and size.

    >>> short([1, 2, 3])
    '[1, 2, 3]'
    >>> short("x" * 500)
    "'xxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxx' (a str of 500 characters)"
    >>> short(list(range(10_000)))
    'a list of 10000 items'
    """
    import reprlib

    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an int of about {int(value.bit_length() * 0.30103) + 1} digits"  # repr may refuse (> 4300 digits)
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset, r.maxfrozenset, r.maxdeque = 2, 4, 4, 4, 4, 4, 4
    r.maxstring, r.maxother, r.maxlong = 42, 42, 42
    text = r.repr(value)
    if isinstance(value, str):
        return text if len(value) <= limit else f"{text} (a str of {len(value)} characters)"
    if len(text) <= limit and "..." not in text:
        return text
    try:
        n = len(value)
    except TypeError:
        return text[:limit] + "..."
    return f"a {type(value).__name__} of {n} item{'s' if n != 1 else ''}"


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to at most ``limit`` characters (``...`` marks the cut)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
