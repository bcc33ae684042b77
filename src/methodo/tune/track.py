"""MLflow for a study: one parent run per study, one child run per trial (``mlflow.parentRunId``).

Children are made through ``MlflowClient`` from whichever worker process runs the trial (the parent
run's id travels in the study's user attributes), so workers on several machines log under the same
parent. A child ends FINISHED (Optuna state COMPLETE), KILLED (PRUNED) or FAILED (FAIL); the state is
also the tag ``optuna.state``. The best trial's child gets the tag ``methodo.best=true``.
"""

from __future__ import annotations

import math
import os
import socket

_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


class NullStudyTracker:
    parent_run_id: str | None = None

    def trial(self, number: int, params: dict) -> "NullStudyTracker":
        return self

    def log_epoch(self, row: dict) -> None: ...

    def end_trial(self, state: str, metrics: dict, error: str | None = None) -> None: ...

    def finish(self, status: str, *, best: dict | None = None, files: list | None = None) -> None: ...

    run_id: str | None = None


class StudyTracker(NullStudyTracker):
    """The parent run of a study; :meth:`trial` opens a child run."""

    FLUSH_S = 2.0  # per-epoch metrics are sent at most this often (and when the trial ends): one write, not one per epoch

    def __init__(self, uri: str, experiment_id: str, parent_run_id: str):
        self.uri, self.experiment_id, self.parent_run_id = uri, experiment_id, parent_run_id
        self.run_id: str | None = None
        self._pending: list = []
        self._flushed = 0.0

    @classmethod
    def start(cls, uri: str, experiment: str, study: str, params: dict, parent_run_id: str | None = None
              ) -> "StudyTracker":
        """Create (or reopen, for a study that continues) the parent run."""
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        from methodo.track import store_lock

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        client = MlflowClient(uri)
        with store_lock(uri):
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
            if parent_run_id is not None:
                try:
                    client.update_run(parent_run_id, status="RUNNING")
                    return cls(uri, exp_id, parent_run_id)
                except mlflow.exceptions.MlflowException:
                    pass  # the store changed since: a new parent run
            run = client.create_run(exp_id, run_name=f"tune-{study}", tags={
                "methodo.kind": "tune", "methodo.study": study, "methodo.host": socket.gethostname(),
                "methodo.pid": str(os.getpid())})
            items = [(k, str(v)[:6000]) for k, v in params.items()]
            from mlflow.entities import Param

            for i in range(0, len(items), 100):
                client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
        return cls(uri, exp_id, run.info.run_id)

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def trial(self, number: int, params: dict) -> "StudyTracker":
        """A child run for trial ``number`` with its sampled ``params``."""
        import time

        from mlflow.entities import Param

        from methodo.track import store_lock

        child = StudyTracker(self.uri, self.experiment_id, self.parent_run_id)
        child._flushed = time.monotonic()  # the first epochs are sent together
        client = self._client()
        with store_lock(self.uri):
            run = client.create_run(self.experiment_id, run_name=f"trial-{number}", tags={
                "mlflow.parentRunId": self.parent_run_id, "methodo.kind": "trial", "optuna.trial": str(number),
                "methodo.host": socket.gethostname(), "methodo.pid": str(os.getpid())})
            child.run_id = run.info.run_id
            if params:
                client.log_batch(child.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return child

    def log_epoch(self, row: dict) -> None:
        import time

        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["epoch"])
        self._pending += [Metric(k, float(v), now, step) for k, v in row.items()
                          if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)]
        if time.monotonic() - self._flushed >= self.FLUSH_S:
            self._flush()

    def _flush(self) -> None:
        import time

        from methodo.track import store_lock

        self._flushed = time.monotonic()
        if not self._pending:
            return
        client = self._client()
        with store_lock(self.uri):
            for i in range(0, len(self._pending), 1000):  # MLflow's limit per batch
                client.log_batch(self.run_id, metrics=self._pending[i:i + 1000])
        self._pending = []

    def end_trial(self, state: str, metrics: dict, error: str | None = None) -> None:
        import time

        from mlflow.entities import Metric, RunTag

        from methodo.track import store_lock

        now = int(time.time() * 1000)
        client = self._client()
        self._pending += [Metric(k, float(v), now, 0) for k, v in metrics.items()
                          if isinstance(v, (int, float)) and v is not None and math.isfinite(v)]
        tags = [RunTag("optuna.state", state)] + ([RunTag("methodo.failure", error[:5000])] if error else [])
        pending, self._pending = self._pending, []
        with store_lock(self.uri):
            for i in range(0, max(len(pending), 1), 1000):
                client.log_batch(self.run_id, tags=tags if i == 0 else [], metrics=pending[i:i + 1000])
            client.set_terminated(self.run_id, status=_STATUS.get(state, "FAILED"))

    def finish(self, status: str, *, best: dict | None = None, files: list | None = None) -> None:
        """End the parent run; tag the best trial's child run and copy the study's files."""
        from methodo.track import store_lock

        client = self._client()
        with store_lock(self.uri):
            if best:
                child = best.get("mlflow_run_id")
                if child:
                    client.set_tag(child, "methodo.best", "true")
                client.set_tag(self.parent_run_id, "methodo.best_trial", str(best["number"]))
                for k, v in (best.get("values") or {}).items():
                    client.log_metric(self.parent_run_id, f"best_{k}", float(v))
            for f in files or []:
                client.log_artifact(self.parent_run_id, str(f))
            client.set_terminated(self.parent_run_id, status=status)


def tracking_uri(track_cfg) -> str:
    """The MLflow store a study logs to: the config's, ``$MLFLOW_TRACKING_URI``, or MLflow's default."""
    if track_cfg.tracking_uri:
        return track_cfg.tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    import mlflow

    return mlflow.get_tracking_uri()
