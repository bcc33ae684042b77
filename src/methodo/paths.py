"""Paths inside a run dir: every file methodo writes there goes through :func:`safe_child`.

A name that would land outside the run dir — ``../x``, an absolute path, ``~``, a NUL byte, or the
same hidden behind URL-encoding (``%2e%2e%2f``) — is refused with :class:`~methodo.errors.BadInput`.

Examples
--------
>>> from pathlib import Path
>>> from methodo.paths import safe_child
>>> safe_child(Path("runs/a"), "figures/roc.png").as_posix()
'runs/a/figures/roc.png'
>>> safe_child(Path("runs/a"), "%2e%2e/%2e%2e/etc/passwd")
Traceback (most recent call last):
...
methodo.errors.BadInput: artifact name '%2e%2e/%2e%2e/etc/passwd' would escape the run dir runs/a
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from methodo.errors import BadInput


def safe_child(root: Path, name: str) -> Path:
    """``root / name``, refusing any ``name`` that resolves outside ``root``."""
    decoded = name
    for _ in range(3):  # double-encoded forms (%252e) included
        decoded = unquote(decoded)
    parts = re.split(r"[\\\\/]", decoded)
    if (not decoded or "\x00" in decoded or os.path.isabs(decoded) or decoded.startswith("~")
            or re.match(r"^[A-Za-z]:", decoded) or any(p == ".." for p in parts)):
        raise BadInput(f"artifact name {name!r} would escape the run dir {root}")
    child = root / decoded
    if not child.resolve().is_relative_to(root.resolve()):  # e.g. through a symlink
        raise BadInput(f"artifact name {name!r} would escape the run dir {root}")
    return child
