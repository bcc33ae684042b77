"""`methodo reproduce RUN_DIR | MLFLOW_RUN_ID`: re-run a recorded run and compare its numbers.

The recorded ``config.yaml`` (resolved, seed included) runs again into a new run dir; then every
metric of ``summary.json`` is compared with the new one. On the same machine, versions and data,
a methodo run on CPU is deterministic, so the numbers must be equal bit for bit; where the versions,
the platform, the CPU threads or the data differ, they must agree within ``tolerance`` and the
differences are shown. The comparison is written to ``reproduction.json`` in the new run dir.

Examples
--------
>>> from methodo.experiments.reproduce import reproduce
>>> rep = reproduce("runs/digits-20261201-101500-ab12")      # doctest: +SKIP
>>> rep.verdict                                               # doctest: +SKIP
'identical'
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methodo.errors import BadInput

_RUN_ID = re.compile(r"[0-9a-f]{32}")
MAX_ARTIFACT = 16 * 1024 * 1024  # bytes: a config.yaml or summary.json larger than this is not one methodo logged


@dataclass
class Source:
    """The run to reproduce: its config text, its record, and where they came from."""

    where: str  # the run dir, or "MLflow run ID"
    config_text: str
    record: Any  # methodo.record.RunRecord


@dataclass
class Reproduction:
    source: str
    run_dir: Path
    verdict: str  # "identical" | "within tolerance" | "differs"
    tolerance: float
    environment: list[dict] = field(default_factory=list)  # {what, recorded, now}
    metrics: list[dict] = field(default_factory=list)  # {split, metric, recorded, now, diff}
    other: list[dict] = field(default_factory=list)  # epochs_run, best_epoch, findings: {what, recorded, now}

    @property
    def reproduced(self) -> bool:
        return self.verdict != "differs"

    def to_dict(self) -> dict:
        return {"source": self.source, "run_dir": str(self.run_dir), "verdict": self.verdict,
                "reproduced": self.reproduced, "tolerance": self.tolerance, "environment": self.environment,
                "metrics": self.metrics, "other": self.other}


def read_source(source: str, *, tracking_uri: str | None = None) -> Source:
    """The config and record of a run dir, or of an MLflow run (its ``config.yaml`` and ``summary.json``
    artifacts, which every tracked methodo run logs)."""
    from methodo.rundir import LAYOUT, RunDir

    path = Path(source)
    if path.is_dir():
        rd = RunDir.open(path, needs="summary")
        if not rd.has(LAYOUT["config"]):
            raise BadInput(f"{path}: not a run dir (no {LAYOUT['config']})")
        return Source(str(path), rd.read_text(LAYOUT["config"]), rd.read_record())
    if not _RUN_ID.fullmatch(source):
        raise BadInput(f"{source}: not a run dir (no such folder) and not an MLflow run ID (32 hex characters)")
    return _from_mlflow(source, tracking_uri)


def _from_mlflow(run_id: str, tracking_uri: str | None) -> Source:
    from methodo.record import RunRecord

    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
        client.get_run(run_id)
    except MlflowException as exc:
        raise BadInput(f"{run_id}: no such MLflow run in the tracking store "
                       f"({str(exc).splitlines()[0][:200]})") from None
    texts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("config.yaml", "summary.json"):
            try:
                local = Path(client.download_artifacts(run_id, name, tmp))
            except (MlflowException, OSError):
                raise BadInput(f"{run_id}: the MLflow run has no {name} artifact (only runs that finished log "
                               "it); reproduce from its run dir instead") from None
            if local.is_symlink() or not local.is_file() or local.stat().st_size > MAX_ARTIFACT:
                raise BadInput(f"{run_id}: its {name} artifact is not a regular file of at most {MAX_ARTIFACT} bytes")
            try:
                texts[name] = local.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise BadInput(f"{run_id}: its {name} artifact is not UTF-8 text") from None
    record = RunRecord.read(Path(f"mlflow:{run_id}/summary.json"), texts["summary.json"])
    return Source(f"MLflow run {run_id}", texts["config.yaml"], record)


def environment_differences(recorded, now) -> list[dict]:
    """What differs between two records' environments: each version (and platform, CPU threads), the
    git commit, the data digest. A value the old record lacks is not a difference."""
    out = []
    old_v, new_v = recorded.versions or {}, now.versions or {}
    for k in sorted(set(old_v) & set(new_v)):
        if old_v[k] != new_v[k]:
            out.append({"what": k, "recorded": old_v[k], "now": new_v[k]})
    if recorded.git_commit and recorded.git_commit != now.git_commit:
        out.append({"what": "git commit", "recorded": recorded.git_commit, "now": now.git_commit})
    old_d = recorded.data.digest if recorded.data else None
    new_d = now.data.digest if now.data else None
    if old_d and old_d != new_d:
        out.append({"what": "data digest", "recorded": old_d, "now": new_d})
    return out


def compare_metrics(recorded, now) -> list[dict]:
    """Every metric of the recorded run beside the new value (``diff`` = now − recorded; ``None`` when
    either is undefined or missing)."""
    rows = []
    for split, values in (recorded.metrics or {}).items():
        for name, old in values.items():
            new = (now.metrics or {}).get(split, {}).get(name)
            diff = None if old is None or new is None else new - old
            rows.append({"split": split, "metric": name, "recorded": old, "now": new, "diff": diff})
    return rows


def verdict(metrics: list[dict], other: list[dict], environment: list[dict], tolerance: float) -> str:
    """``identical`` (every value equal bit for bit), ``within tolerance`` (the environment differs and
    every metric is within ``tolerance``), else ``differs``."""
    same = all(m["recorded"] == m["now"] for m in metrics) and all(o["recorded"] == o["now"] for o in other)
    if same:
        return "identical"
    close = all(m["recorded"] is None and m["now"] is None
                or m["diff"] is not None and abs(m["diff"]) <= tolerance for m in metrics)
    return "within tolerance" if environment and close else "differs"


def reproduce(source: str, *, out: str | Path | None = None, tolerance: float = 1e-6,
              tracking_uri: str | None = None) -> Reproduction:
    """Re-run ``source`` (a run dir or an MLflow run ID) from its recorded config and seed into a new run
    dir (``out``, default ``runs/NAME-reproduce-...``) and compare the numbers."""
    import math

    from methodo.config import load_config
    from methodo.pipeline import run
    from methodo.rundir import RunDir

    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise BadInput(f"--tolerance {tolerance}: must be a number ≥ 0")
    src = read_source(source, tracking_uri=tracking_uri)
    if src.record.status != "finished":
        raise BadInput(f"{src.where}: the run did not finish (status {src.record.status!r}); there is nothing to "
                       "compare with (resume it with `methodo run --resume`)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(src.config_text, encoding="utf-8")
        try:
            cfg = load_config(cfg_path)
        except BadInput as exc:
            raise BadInput(f"{src.where}: its config no longer validates: {exc}") from None
    if out is None:
        out = RunDir.default_path(cfg.name, "reproduce")
    res = run(cfg, out=out)
    old, new = src.record, res.record
    other = [{"what": k, "recorded": getattr(old, k), "now": getattr(new, k)} for k in ("epochs_run", "best_epoch")]
    other.append({"what": "findings", "recorded": sorted(f.id for f in old.findings),
                  "now": sorted(f.id for f in new.findings)})
    metrics = compare_metrics(old, new)
    env = environment_differences(old, new)
    rep = Reproduction(source=src.where, run_dir=res.run_dir, verdict=verdict(metrics, other, env, tolerance),
                       tolerance=tolerance, environment=env, metrics=metrics, other=other)
    RunDir(res.run_dir).write_json("reproduction.json", rep.to_dict())
    return rep
