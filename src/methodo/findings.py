"""What a check reports: a :class:`Finding`, and the one ``FINDINGS`` registry every check is registered in.

Run checks live in :mod:`methodo.diagnose`, data checks in :mod:`methodo.data.audit`; both import this
small module (and not each other), and importing :mod:`methodo.diagnose` registers both families, so one
registry lists every finding.

Examples
--------
>>> from methodo.findings import Finding
>>> Finding("overfitting", "high", "It overfits", {"gap": 0.1}, "Regularize.").to_dict()["severity"]
'high'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from methodo.registry import Registry

FINDINGS = Registry("finding")
SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}


@dataclass
class Finding:
    """One problem found: its ``id`` (the registered check's name), how bad (``severity``: critical,
    high, medium, low or info), a one-line ``title``, the numbers behind it (``evidence``) and what to
    do next (``action``)."""

    id: str
    severity: str  # critical | high | medium | low | info
    title: str
    evidence: dict[str, Any]
    action: str

    def to_dict(self) -> dict:
        return asdict(self)
