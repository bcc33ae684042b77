"""The one pipeline: config → data → model → train → evaluate → diagnose → report + track.

This is the only module that strings the stages together (:mod:`methodo.stages` holds them). Everything
that can be wrong with the user's input (config, data, model choice, output dir, the checkpoint to
resume) is checked before the run dir is created or touched, so a bad input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methodo import signals, stages
from methodo.config import Config, load_config
from methodo.errors import BadInput
from methodo.record import FoldInfo, RunRecord
from methodo.rundir import LAYOUT, RunDir
from methodo.stages import prepare as prepare_run  # noqa: F401  (the stages 1-2 on their own, as before)


@dataclass
class RunResult:
    """What a run produced: its folder and its record (``summary`` is the content of ``summary.json``)."""

    run_dir: Path
    record: RunRecord

    @property
    def summary(self) -> dict[str, Any]:
        return self.record.to_dict()

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def metrics(self) -> dict[str, dict]:
        return self.record.metrics

    @property
    def findings(self) -> list[dict]:
        return [f.model_dump() for f in self.record.findings]


@contextlib.contextmanager
def _torch_threads_kept():
    """``train.threads`` applies to this run only: the caller's torch thread count comes back after."""
    import torch

    n = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)


@_torch_threads_kept()
def run(config: str | Path | Config | None, overrides: list[str] | tuple[str, ...] = (), *,
        out: str | Path | None = None, resume: str | Path | None = None) -> RunResult:
    """Run the whole pipeline and return its :class:`RunResult`.

    Parameters
    ----------
    config : path to a YAML config, or a validated :class:`~methodo.config.Config`.
    overrides : dotted ``key=value`` strings applied on top of the file.
    out : the run dir to create (default ``runs/NAME-TIMESTAMP-XXXX``).
    resume : a run dir to continue from its ``last`` checkpoint (its saved config is used).

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), every process runs this: each prepares the same data and
    model, all train together (:mod:`methodo.train.distributed`), and rank 0 alone writes the run dir,
    evaluates and tracks; on the other ranks ``run`` returns once training is over (their record is not
    the final one). A restarted job (torchrun ``--max-restarts``, a Slurm requeue) resumes the run dir
    its first attempt created.

    Examples
    --------
    >>> import methodo
    >>> res = methodo.run("examples/digits.yaml", overrides=["train.epochs=3"])  # doctest: +SKIP
    >>> res.metrics["test"]["accuracy"] > 0.8                                  # doctest: +SKIP
    True
    """
    from methodo.train import distributed

    clock = stages.Clock()  # each stage's wall time: summary.json → timings, a line per stage in a log file
    # 0. The config: a file and overrides, a Config, or the saved config of the run to resume.
    with clock("config"):
        cfg, resume_rd = stages.resolve_config(config, overrides, resume)
    if cfg.data.split.method == "kfold" and cfg.data.split.fold is None:
        if resume_rd is not None:
            raise BadInput(f"--resume {resume_rd.path}: a k-fold run resumes one fold at a time: "
                           f"--resume {resume_rd.path}/folds/fold-I")
        if distributed.world_size() > 1:
            raise BadInput("data.split.method: kfold runs its folds one after the other in one process; under "
                           "torchrun run one fold per job (data.split.fold=I)")
        return _run_kfold(cfg, out=out, clock=clock)
    if distributed.restart_count() and signals.stop_requested():  # torchrun restarting a group asked to stop
        from methodo.errors import StopRequested

        raise StopRequested(f"not started: {signals.stop_reason()} exists; the job is being requeued")
    with distributed.session(cfg.train.device) as dist:
        # rank 0 decides the run dir once; a restarted job (torchrun, Slurm requeue) continues the first attempt's
        out, again = distributed.rank0_decides(dist, lambda: distributed.restart_target(out, resume, name=cfg.name))
        if again is not None and resume is None:
            with clock("config"):
                cfg, resume_rd = stages.resolve_config(config, overrides, again)
        return _run(cfg, resume_rd, out, clock, dist)


def _run(cfg: Config, resume_rd, out, clock: stages.Clock, dist) -> RunResult:
    """:func:`run`'s stages, in order (``dist``: this process's place in a torchrun job, or ``None``)."""
    from methodo.train import distributed

    main = dist is None or dist.main
    # 1-2. Data (split, scaling fitted on train only) and the model sized from it; a checkpoint to resume
    # from must fit that model. lr=auto runs the LR range test. Nothing is written before step 3.
    prep = stages.prepare(cfg, clock)
    with clock("resume", when=resume_rd is not None):
        resume_from = stages.check_resume(resume_rd, prep)
    prep, lr_found, lr_keys = stages.auto_lr(prep, clock)
    if dist is not None and lr_keys:  # every rank trains with rank 0's LR
        prep.cfg = prep.cfg.model_copy(update={"train": distributed.rank0_decides(dist, lambda: prep.cfg.train)})
    with clock("audit", when=main):
        data_findings = stages.audit(prep) if main else []

    # 3. The run dir (created exclusively, or the one resumed), the run's inputs, tracking; under DDP by
    # rank 0, the others learn where it is.
    def setup():
        tracker = stages.connect_tracking(prep.cfg)  # an unreachable store is found here, before any write
        rd, record = stages.open_run(prep, tracker, out=out, resume_rd=resume_rd, resumed=resume_from is not None,
                                     lr_found=lr_found, lr_keys=lr_keys, dist=dist)
        return tracker, rd, record

    with clock("setup"):
        tracker, rd, record = distributed.rank0_decides(dist, setup)
    if not main:
        from methodo.track import NullTracker

        tracker = NullTracker()
    clock.log_lines(prep.cfg.train.progress and main)  # once the run exists: bad input found before is one error line
    previous_signals = signals.install()
    try:
        # 4. Train: the best weights (by the monitor) end up in the model; with distill.teacher, the teacher
        # (a run dir, or a model trained first) gives its soft targets, computed once.
        with clock("teacher", when=prep.distill is not None):
            teacher = stages.build_teacher(prep)
        with clock("train"):
            res = stages.train(prep, rd, record, tracker, resume_from=resume_from, dist=dist,
                               teacher=teacher)
        if not main:  # rank 0 evaluates and writes from here on
            return RunResult(rd.path, record)
        # 5. Evaluate every split with the best weights; the test split only here, once.
        with clock("predict"):
            preds = stages.predict_splits(prep)
        with clock("evaluate"):
            stages.evaluate(prep, res, preds, record, tracker)
        with clock("scratch", when=prep.cfg.transfer.compare_scratch and prep.plan is not None and prep.distill is None):
            stages.compare_scratch(prep, record)  # transfer.compare_scratch: the same model from random weights
        # Trust: per-group metrics and mitigations (data.sensitive); attacks and corruptions (evaluate.robustness).
        stages.fairness(prep, preds, record, tracker, clock)
        stages.robustness(prep, rd, record, tracker, clock)
        with clock("distill", when=teacher is not None):
            stages.compare_distill(prep, teacher, record, preds)  # teacher, student, scratch student side by side
        signals.check()
        # 6. Diagnose: data findings and the checks on curves and predictions. Label issues by confident
        # learning over val + test, or (evaluate.label_issues: cross_val) every row by K-fold cross-fitting.
        with clock("cross_fit", when=prep.cfg.evaluate.label_issues == "cross_val"):
            oos = stages.cross_fit(prep)
        with clock("diagnose"):
            issues = stages.label_issues(prep, preds, oos)
            findings = stages.diagnose(prep, res, preds, record, res.history, data_findings, issues)
        # 7. Figures, prediction files (label_issues.csv among them), explanations.
        stages.write_outputs(prep, rd, record, res, preds, findings, clock, issues)
    except BaseException as exc:
        if main:
            stages.fail(rd, record, tracker, exc, clock=clock)
        raise
    finally:
        signals.restore(previous_signals)
    # 8. The model and its training data to tracking; the final summary, the report, the end of the tracking run.
    with clock("log_model", when=record.mlflow_run_id is not None):
        stages.log_model(prep, rd, record, tracker)
    stages.close(rd, record, tracker, clock=clock, status="finished", mlflow_status="FINISHED")
    return RunResult(rd.path, record)


@_torch_threads_kept()
def lr_find(config: str | Path | Config, overrides: list[str] | tuple[str, ...] = (), *,
            out: str | Path | None = None):
    """Run the LR range test for a config; returns ``(out_dir, LRFindResult)``.

    Writes ``lr_find.json`` (with ``suggested_lr``) and ``lr_find.png`` (loss vs LR with the
    suggestions marked) into ``out`` (default ``runs/NAME-lrfind-TIMESTAMP-XXXX``).

    Examples
    --------
    >>> out, res = lr_find("examples/digits.yaml")   # doctest: +SKIP
    >>> 1e-4 < res.suggested_lr < 1                  # doctest: +SKIP
    True
    """
    from methodo.train.lr_find import lr_range_test, write

    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    prep = stages.prepare(cfg)
    tcfg = prep.cfg.train
    if tcfg.optimizer.lr == "auto":  # the ramp sets the LR; any number validates the optimizer
        oc = tcfg.optimizer
        tcfg = tcfg.model_copy(update={"optimizer": type(oc).model_validate({**oc.model_dump(), "lr": 1.0})})
    try:
        res = lr_range_test(prep.model, prep.data, tcfg, seed=cfg.seed, class_weights=prep.class_weights)
    except ValueError as exc:
        raise BadInput(f"train.lr_find: {exc}") from None
    rd = RunDir.create(out, name=cfg.name, kind="lrfind")
    write(res, rd.path, figure=rd.file("lr_find.png"))
    return rd.path, res


# --------------------------------------------------------------------------- k-fold


def _mean_std(values: list) -> tuple[float | None, float | None]:
    import numpy as np

    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


# k-fold figure: the metrics per fold drawn for each task (the first three of the task's otherwise)
_KFOLD_FIGURE = {"classification": ["accuracy", "balanced_accuracy", "f1"], "regression": ["r2", "mae", "rmse"]}


def _run_kfold(cfg: Config, *, out: str | Path | None, clock: stages.Clock) -> RunResult:
    """k runs, fold i as the test split of run i (``folds/fold-i``); the summary holds the mean of
    every metric over folds in ``metrics`` and the spread in ``metrics_std`` and ``kfold``."""
    import sys

    from methodo.data import load_dataset, split_dataset

    k = cfg.data.split.folds
    with clock("load"):
        ds = load_dataset(cfg.data)  # bad data or folds fail here, before anything is written
        for i in range(1, k + 1):
            split_dataset(ds, cfg.data, cfg.seed, fold=i)
        del ds
    with clock("setup"):
        tracker = stages.connect_tracking(cfg)
        rd = RunDir.create(out, name=cfg.name)
        rd.write_text(LAYOUT["config"], stages.dump_yaml(cfg))
        record = RunRecord(name=cfg.name, task=cfg.task, dataset=cfg.data.source, seed=cfg.seed,
                           world_size=stages.world_size(), metrics_std={}, versions=stages.versions(),
                           git_commit=stages.git_commit(), kfold={"folds": k, "runs": []})
        tracker.start(stages.flat_params(cfg), {"methodo.run_dir": str(rd.path.resolve()),
                                                "methodo.run_name": rd.path.name,
                                                "methodo.dataset": cfg.data.source, "methodo.kfold": str(k)})
        record.mlflow_run_id = tracker.run_id
        rd.write_record(record)
    clock.log_lines(cfg.train.progress)
    folds: list[RunRecord] = []
    try:
        with clock("folds"):  # each fold's own summary.json has its stages
            for i in range(1, k + 1):
                split = cfg.data.split.model_copy(update={"fold": i})
                sub = cfg.model_copy(update={
                    "name": f"{cfg.name}-fold{i}", "data": cfg.data.model_copy(update={"split": split}),
                    "track": cfg.track.model_copy(update={"mlflow": False}),  # the parent run tracks the folds
                })
                if cfg.train.progress:
                    print(f"fold {i}/{k}", file=sys.stderr, flush=True)
                res = run(sub, out=rd.fold(i))
                folds.append(res.record)
                record.kfold.runs.append(FoldInfo(fold=i, run_dir=f"folds/fold-{i}", status=res.status,
                                                  epochs_run=res.record.epochs_run, best_epoch=res.record.best_epoch,
                                                  metrics=res.record.metrics))
                tracker.log_metrics({f"fold{i}_test_{m}": v for m, v in res.record.metrics["test"].items()})
                rd.write_record(record)
        with clock("aggregate"):  # mean and spread over folds, their figure
            _kfold_aggregate(record, folds)
            from methodo.report import plots

            names = _KFOLD_FIGURE.get(record.task, list(folds[0].metrics["test"])[:3])
            plots.kfold_metrics([r.model_dump() for r in record.kfold.runs], rd.figure("kfold.png"), metrics=names)
            tracker.log_metrics({f"test_{m}": v for m, v in record.metrics["test"].items()})
            tracker.log_metrics({f"test_{m}_std": v for m, v in record.metrics_std["test"].items()})
    except BaseException as exc:
        stages.fail(rd, record, tracker, exc, clock=clock)
        raise
    stages.close(rd, record, tracker, clock=clock, status="finished", mlflow_status="FINISHED")
    return RunResult(rd.path, record)


def _kfold_aggregate(record: RunRecord, folds: list[RunRecord]) -> None:
    """Mean and spread of every metric over folds; each finding once, at its most severe fold."""
    from methodo.diagnose import SEVERITY_ORDER
    from methodo.record import FindingRecord

    first = folds[0]
    record.task, record.dataset, record.data = first.task, first.dataset, first.data
    for split in ("train", "val", "test"):
        mean_std = {m: _mean_std([f.metrics[split].get(m) for f in folds]) for m in first.metrics[split]}
        record.metrics[split] = {m: v[0] for m, v in mean_std.items()}
        record.metrics_std[split] = {m: v[1] for m, v in mean_std.items()}
    for strategy, vals in first.baselines.items():
        record.baselines[strategy] = {m: _mean_std([f.baselines[strategy].get(m) for f in folds])[0] for m in vals}
    record.kfold.mean = record.metrics["test"]
    record.kfold.std = record.metrics_std["test"]
    found = sorted(((SEVERITY_ORDER.get(x.severity, 9), i, x) for i, f in enumerate(folds, 1) for x in f.findings),
                   key=lambda t: (t[0], t[1]))
    seen = set()
    for _, i, x in found:
        if x.id in seen:
            continue
        seen.add(x.id)
        where = [j for j, g in enumerate(folds, 1) if any(y.id == x.id for y in g.findings)]
        record.findings.append(FindingRecord.model_validate(
            {**x.model_dump(), "title": f"{x.title} (fold {i}; found in folds {', '.join(map(str, where))})"}))
    record.epochs_run = int(sum(f.epochs_run for f in folds))
