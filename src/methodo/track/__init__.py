"""Experiment tracking with MLflow (imported lazily: only a run that tracks pays for it).

The embedded default is MLflow's own: a SQLite store ``./mlflow.db`` in the working directory,
no server. ``$MLFLOW_TRACKING_URI`` or ``track.tracking_uri`` points the same code at a server.

Crash safety:

- every call that writes to a local SQLite store holds an exclusive file lock (``mlflow.db.lock``),
  so several ``methodo run`` processes started at once on a fresh store do not race on the schema
  creation or on writes;
- a run that raises ends ``FAILED``, one stopped by Ctrl-C or SIGTERM ends ``KILLED``;
- a run whose process died without a word (SIGKILL, power loss) stays ``RUNNING`` in the store;
  the next ``methodo run`` on the same host finds it (tags ``methodo.host``/``methodo.pid``) and
  marks it ``FAILED``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any


SERIES_POINTS = 1000  # per-step points of a series sent to MLflow: one log_batch (MLflow's limit per batch)


def series_steps(n: int, cap: int = SERIES_POINTS) -> list[int]:
    """Indices (from 0) of the steps of an ``n``-step series sent to MLflow: all of them up to ``cap``,
    else ``cap`` evenly spaced ones, the first and the last included.

    >>> len(series_steps(5470)), series_steps(5470)[:3], series_steps(5470)[-1]
    (1000, [0, 5, 11], 5469)
    """
    if n <= cap:
        return list(range(n))
    import numpy as np

    return np.linspace(0, n - 1, cap).round().astype(int).tolist()  # spacing > 1: distinct steps


class NullTracker:
    """Tracking switched off: same calls, nothing recorded."""

    run_id = None

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None: ...

    def log_epoch(self, row: dict[str, float]) -> None: ...

    def log_metrics(self, metrics: dict[str, float]) -> None: ...

    def log_series(self, series: dict[str, list[float]]) -> None: ...

    def log_model(self, prep, rd, *, register: str | None = None) -> str | None: ...

    def finish(self, status: str, rd=None) -> None: ...


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


@contextlib.contextmanager
def store_lock(uri: str):
    """Hold an exclusive inter-process lock beside a local SQLite store (no-op for servers)."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    lock = db.with_name(db.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """Is a methodo process with this pid still running on this host?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # the pid may have been reused by another program
        return b"methodo" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


class MlflowTracker(NullTracker):
    """One MLflow run per ``methodo run``; ended FAILED (or KILLED) whenever it does not finish."""

    def __init__(self, experiment: str, tracking_uri: str | None = None):
        self.experiment = experiment
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.run_id: str | None = None
        self.reaped: list[str] = []  # stale RUNNING runs marked FAILED at start
        self._caller_uri: tuple[str | None, str | None] | None = None  # restored by finish()

    def _uri(self) -> str:
        import mlflow

        return mlflow.get_tracking_uri()

    def start(self, params: dict[str, Any], tags: dict[str, str]) -> None:
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if self.tracking_uri:
            # mlflow.set_tracking_uri is process-wide (it also sets $MLFLOW_TRACKING_URI): remember the
            # caller's so that finish() gives it back and the next in-process run is not sent here.
            from mlflow.tracking._tracking_service import utils as _tracking

            self._caller_uri = (getattr(_tracking, "_tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI"))
            mlflow.set_tracking_uri(self.tracking_uri)
        host = socket.gethostname()
        try:
            with store_lock(self._uri()):
                self.reaped = self._reap_stale(host)
                mlflow.set_experiment(self.experiment)
                run = mlflow.start_run(run_name=tags.get("methodo.run_name"),
                                       tags={**tags, "methodo.host": host, "methodo.pid": str(os.getpid())})
                self.run_id = run.info.run_id
                # MLflow params are strings of at most 6000 characters; None is logged as "None".
                items = [(k, str(v)[:6000]) for k, v in params.items()]
                for i in range(0, len(items), 100):
                    mlflow.log_params(dict(items[i:i + 100]))
        except BaseException:
            if self.run_id is None:  # no run to finish: give the caller's URI back now
                self._restore_caller_uri()
            raise

    @staticmethod
    def _reap_stale(host: str) -> list[str]:
        """Mark FAILED the RUNNING runs of this host whose methodo process is gone."""
        import mlflow
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                  filter_string=f"attributes.status = 'RUNNING' and tags.`methodo.host` = '{host}'")
        reaped = []
        for r in runs:
            pid = r.data.tags.get("methodo.pid", "")
            if pid.isdigit() and not _alive(int(pid)):
                client.set_tag(r.info.run_id, "methodo.failure", f"process {pid} died without ending the run")
                client.set_terminated(r.info.run_id, status="FAILED")
                reaped.append(r.info.run_id)
        return reaped

    def log_epoch(self, row: dict[str, float]) -> None:
        import mlflow

        step = int(row["epoch"])
        with store_lock(self._uri()):
            mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch" and v is not None}, step=step)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        import mlflow

        with store_lock(self._uri()):
            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})

    def log_series(self, series: dict[str, list[float]]) -> None:
        """Per-step series (LR, loss, gradient norm) with step = optimizer step: every step up to
        :data:`SERIES_POINTS` steps, else every k-th step and the last (:func:`series_steps`), one
        ``log_batch`` per series. ``steps.csv``, uploaded by :meth:`finish`, has every step."""
        import math
        import time

        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri) if self.tracking_uri else MlflowClient()
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(values[i]), now, int(i) + 1) for name, values in series.items()
                   for i in series_steps(len(values)) if values[i] is not None and math.isfinite(values[i])]
        for i in range(0, len(metrics), SERIES_POINTS):  # MLflow's limit per batch
            client.log_batch(self.run_id, metrics=metrics[i:i + SERIES_POINTS])

    def log_model(self, prep, rd, *, register: str | None = None) -> str | None:
        """Log the trained model (a pyfunc with its preprocessing, signature and input example) and the
        training data as a dataset input; register the model as ``register`` when given
        (:mod:`methodo.use.mlflow_model`). Returns the model's URI."""
        from methodo.use.mlflow_model import log_model

        with store_lock(self._uri()):
            return log_model(prep, rd, register=register)

    def finish(self, status: str, rd=None) -> None:
        """End the run with ``status``, uploading the run dir's main files and figures (``rd``, a
        :class:`~methodo.rundir.RunDir`): only regular files inside it, never a link."""
        import mlflow

        with store_lock(self._uri()):
            try:
                if rd is not None:
                    for name in ("config.yaml", "summary.json", "report.html", "metrics.csv", "MODEL_CARD.md", "steps.csv"):
                        if rd.has(name) and not rd.file(name).is_symlink():
                            mlflow.log_artifact(str(rd.file(name)))
                    figures = rd.figures
                    if figures.is_dir() and not figures.is_symlink():
                        for p in sorted(figures.iterdir()):
                            if rd.has(f"figures/{p.name}") and not p.is_symlink():
                                mlflow.log_artifact(str(p), artifact_path="figures")
            finally:
                mlflow.end_run(status=status)
                self._restore_caller_uri()

    def _restore_caller_uri(self) -> None:
        if self._caller_uri is None:
            return
        import mlflow

        global_uri, env_uri = self._caller_uri
        self._caller_uri = None
        mlflow.set_tracking_uri(global_uri)  # None: back to MLflow's default, and unsets the variable
        if env_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env_uri


def make_tracker(track_cfg, default_experiment: str) -> NullTracker:
    if not track_cfg.mlflow:
        return NullTracker()
    return MlflowTracker(track_cfg.experiment or default_experiment, track_cfg.tracking_uri)


def store_problem(uri: str, *, timeout: float = 3.0) -> str | None:
    """Why the MLflow store at ``uri`` cannot be used now (``None`` when it can), found in seconds.

    A server (http/https) must answer its ``/health`` endpoint within ``timeout`` seconds; a local
    SQLite store needs a writable folder, file and lock file; a file store a writable folder. Other
    schemes (databricks, ...) are not checked here.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # noqa: S310 (http/https only)
                return None
        except urllib.error.HTTPError:
            return None  # something answered: a server behind a proxy or auth, MLflow reports its own errors
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"no answer within {timeout:g} s ({reason})"
    db = _sqlite_path(uri)
    if db is not None:
        folder = db.parent if str(db.parent) else Path(".")
        if not folder.is_dir():
            return f"folder {folder} does not exist"
        if db.exists() and not db.is_file():
            return f"{db} is not a file"
        # open both for writing, as the run will (the lock file is created beside the store anyway)
        for p, what in ((db, "database file"), (db.with_name(db.name + ".lock"), "lock file")):
            if p.exists() or what == "lock file":
                try:
                    with open(p, "ab"):
                        pass
                except OSError as exc:
                    return f"{what} {p} cannot be written ({exc.strerror or exc})"
        if not db.exists() and not os.access(folder, os.W_OK | os.X_OK):
            return f"folder {folder} is not writable"
        return None
    if scheme in ("", "file"):
        folder = Path(urllib.parse.urlparse(uri).path if scheme == "file" else uri)
        probe = folder if folder.exists() else folder.parent
        if not os.access(probe, os.W_OK | os.X_OK):
            return f"folder {probe} is not writable"
    return None


def connect(track_cfg, default_experiment: str) -> NullTracker:
    """The run's tracker, after checking its store answers (before anything is written).

    An unreachable store is bad input naming the URI, or with ``track.required: false`` a warning and
    an untracked run.
    """
    tracker = make_tracker(track_cfg, default_experiment)
    if not isinstance(tracker, MlflowTracker):
        return tracker
    import mlflow

    uri = tracker.tracking_uri or mlflow.get_tracking_uri()
    why = store_problem(uri)
    if why is None:
        # a store that dies mid-run must not cost minutes of retries per call
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        return tracker
    from methodo.errors import BadInput

    if track_cfg.required:
        raise BadInput(f"track.tracking_uri: the MLflow store {uri} cannot be used: {why}; start it or fix the URI, "
                       "or run untracked with track.mlflow=false (track.required=false: warn and go on)")
    import sys

    print(f"warning: the MLflow store {uri} cannot be used ({why}); this run is not tracked "
          "(track.required=false)", file=sys.stderr)
    return NullTracker()
