"""Progress on stderr, never on stdout (scripts parse stdout): live bars on a terminal, lines in a log file.

``train.progress: false`` silences both. On a terminal, the loops of the long stages (training,
bootstrap, audit checks, explanations) show a tqdm bar that vanishes when done; when stderr is a file
(CI, Slurm), bars would fill it with carriage returns, so the training loop writes one line per epoch
and the pipeline one line per finished stage instead.
"""

from __future__ import annotations

import sys


def live(enabled: bool) -> bool:
    """Live bars: progress is on and stderr is a terminal."""
    return bool(enabled) and sys.stderr.isatty()


def lines(enabled: bool) -> bool:
    """One line per step instead: progress is on and stderr is a log file."""
    return bool(enabled) and not sys.stderr.isatty()


def bar(iterable, *, enabled: bool, desc: str, unit: str = "it", total: int | None = None):
    """``iterable`` wrapped in a tqdm bar shown only when :func:`live` (it vanishes when the loop ends)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not live(enabled), leave=False,
                dynamic_ncols=True)
