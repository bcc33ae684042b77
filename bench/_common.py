"""What every benchmark script records beside its numbers: the machine, its load, the code measured,
and how a measured section of BENCHMARKS.md is replaced in place."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loadavg() -> str:
    """The 1-minute load average, as text."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


MAX_LOAD = 0.5  # above this 1-minute load average, timings are not worth writing down


def load_too_high(load: str, limit: float = MAX_LOAD) -> bool:
    """True when the 1-minute load average ``load`` (as :func:`loadavg` gives it) is above ``limit``,
    or unknown: other processes then share the cores and a timing ratio says little."""
    try:
        return float(load) > limit
    except ValueError:
        return True


def cpu_and_nproc() -> tuple[str, str]:
    """The CPU model name and `nproc` (ignoring OMP limits, so it says what the machine has)."""
    cpu = platform.processor() or "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")}
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True, env=env).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        nproc = str(os.cpu_count())
    return cpu, nproc


def code_version(dirty_under: str, digest_of: str | None = None) -> str:
    """The commit measured, any uncommitted change under ``dirty_under``, and optionally the sha256 of
    one file (the code being timed may be mid-edit)."""
    def git(*a):
        out = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        head = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = [ln.split(maxsplit=1)[-1] for ln in git("status", "--porcelain", "--", dirty_under).splitlines()]
    except (OSError, subprocess.SubprocessError):
        head, dirty = "unknown", []
    text = f"commit `{head}`"
    if dirty:
        text += " plus uncommitted changes to " + ", ".join(f"`{d}`" for d in dirty)
    if digest_of is not None:
        f = ROOT / digest_of
        digest = hashlib.sha256(f.read_bytes()).hexdigest()[:12] if f.exists() else "n/a"
        text += f"; `{digest_of}` sha256 `{digest}`"
    return text


def replace_section(path: Path, heading: str, body: str) -> None:
    """Write ``body`` (starting with ``heading``) in place of that section of ``path``, or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == heading), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + body
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + body + ("\n" + tail if tail else "")
    path.write_text(new, encoding="utf-8")
