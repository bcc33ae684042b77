"""What a check reports: a :class:`Finding`, and the one ``FINDINGS`` registry every check is registered in.

Every finding says how sure it is: ``evidence["certainty"]``, made by :func:`certainty`, names the method
behind the decision (a Wilson or bootstrap interval, a test with its p-value and the correction used, an
exact count, or a plain threshold rule) and says it in one sentence (``statement``, shown in the report).

Run checks live in :mod:`methodo.diagnose`, data checks in :mod:`methodo.data.audit`; both import this
small module (and not each other), and importing :mod:`methodo.diagnose` registers both families, so one
registry lists every finding.

Examples
--------
>>> from methodo.findings import Finding
>>> Finding("overfitting", "high", "It overfits", {"gap": 0.1}, "Regularize.").to_dict()["severity"]
'high'
>>> wilson(3, 10)
[0.1078, 0.6032]
>>> certainty("exact count", "Counted on every row; no sample.")["method"]
'exact count'
"""

from __future__ import annotations

import math
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


# --------------------------------------------------------------------------- how sure a finding is

# The methods a certainty names (``certainty["method"]``): what kind of statement it is.
METHODS = ("wilson interval", "bootstrap interval", "test", "exact count", "measured", "threshold rule")


def certainty(method: str, statement: str, *, interval: list[float] | None = None, level: float | None = None,
              p_value: float | None = None, test: str | None = None, correction: str | None = None, **numbers
              ) -> dict[str, Any]:
    """How sure a finding is, for ``evidence["certainty"]``: the ``method`` (one of :data:`METHODS`), a
    one-sentence ``statement`` a person can read, and what backs it: an ``interval`` at ``level``, a
    ``p_value`` of a named ``test`` with the multiple-testing ``correction`` used, or other ``numbers``.

    ``exact count`` is a count over every row (no sample, so no interval); ``measured`` a direct
    measurement of the model (weights, gradients); ``threshold rule`` a rule of thumb with no sampling
    model, said as such.
    """
    if method not in METHODS:
        raise ValueError(f"certainty method {method!r}: choose one of {', '.join(METHODS)}")
    out: dict[str, Any] = {"method": method, "statement": statement}
    if interval is not None:
        out["interval"] = [round(float(interval[0]), 4), round(float(interval[1]), 4)]
        out["level"] = level if level is not None else 0.95
    if p_value is not None:
        out["p_value"] = float(f"{float(p_value):.3g}")
        out["test"] = test
        out["correction"] = correction or "none (one test)"
    out.update({k: v for k, v in numbers.items() if v is not None})
    return out


def wilson(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """The Wilson score interval of a proportion ``k / n`` (``None`` when ``n`` is 0), rounded to 4 places.

    The interval of choice for a binomial proportion (it stays inside [0, 1] and keeps its coverage near
    0 and 1, where the normal approximation fails); computed by :func:`scipy.stats.binomtest`.
    """
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def fmt_interval(iv) -> str:
    """``[0.12, 0.34]`` as text, 3 significant digits."""
    return f"[{iv[0]:.3g}, {iv[1]:.3g}]" if iv else "[?]"


def normal_sf(z: float) -> float:
    """One-sided p-value of a standard normal statistic ``z`` (P(Z ≥ z))."""
    return 0.5 * math.erfc(z / math.sqrt(2))
