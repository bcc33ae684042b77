"""``methodo tune``: an Optuna study over a methodo config.

The call order, for one command:

1. Read the base config (+ overrides) and the space; check the space against the strict config
   (``Space.check``); load the data once (bad data is one ``error:`` line before any trial).
2. Open the storage (SQLite file by default, PostgreSQL for many machines) and create or load the
   study ``--study NAME``; a study that exists must have the same config, space and objectives.
3. Start tracking (one MLflow parent run per study) and run ``--workers K`` worker loops (K processes,
   or this one). Each worker loop: under the study's budget lock, fail the trials whose heartbeat
   stopped (their retry is queued by ``RetryHeartbeatStaleTrialCallback``), count the trials, and
   ``ask`` for one while the study holds fewer than ``--trials``; run it outside the lock, with a
   heartbeat thread; ``tell`` its state. When the budget is spent a worker waits while others' trials
   run (one that dies is retried here), then stops. So the study ends with exactly ``--trials``
   trials that count (COMPLETE, PRUNED, FAIL not retried) and none RUNNING.
4. Write the study's files: ``tune.json``, ``trials.csv``, ``best.yaml``, ``tune.html``; re-run the
   top trials with other seeds (``--reeval-top``) and the best config on the test split once
   (``--final-test``); the findings ``search_overfits_val`` and ``space_edge``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methodo.errors import BadInput, ConfigError, RunFailed

DEFAULT_STORAGE = "sqlite:///tune.db"
COUNTED = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class TuneOptions:
    """Everything ``methodo tune`` was asked (the command line's options, typed)."""

    config: str
    space: str
    trials: int
    overrides: list[str] = field(default_factory=list)
    timeout: float | None = None
    sampler: str = "tpe"
    pruner: str | None = None  # None: median for one objective, none for several
    objectives: str | None = None
    storage: str | None = None
    study: str | None = None
    workers: int = 1
    out: str | None = None
    final_test: bool = False
    reeval_top: int = 0
    reeval_seeds: int = 3
    heartbeat: int = 10
    hypergradient: float | None = None
    sampler_seed: int | None = None  # default: the config's seed (+ the worker's index)


@dataclass
class TuneResult:
    out: Path
    study: str
    record: dict

    @property
    def best(self) -> dict | None:
        return self.record.get("best")


def redact(url: str) -> str:
    """A storage URL without its password (for messages, files and MLflow)."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# --------------------------------------------------------------------------- the context every worker shares


@dataclass
class Context:
    """What a worker needs, picklable (it is sent to worker processes as is)."""

    opts: TuneOptions
    base: dict  # the base config data, overrides applied
    source: str
    space_dict: dict
    space_text: str
    task: str
    objectives: list
    storage_url: str
    study_name: str
    budget: int
    epochs: int
    deadline: float | None
    mlflow: dict | None = None  # {"uri", "experiment_id", "parent_run_id"} when tracking
    threads: int | None = None  # torch threads per worker process (several workers)

    @property
    def space(self):
        from methodo.tune.space import Space

        return Space.from_text(self.space_text, self.opts.space)


def _validate(data: dict, source: str):
    from methodo.config import validate

    return validate(data, source=source)


def prepare_context(opts: TuneOptions) -> Context:
    """Step 1: the base config, the space, the task, the objectives; every bad input found here."""
    from methodo.config import _read_yaml, apply_overrides, validate
    from methodo.tune.samplers import PRUNERS, SAMPLERS
    from methodo.tune.space import Space
    from methodo.tune.trial import parse_objectives

    if opts.trials < 1:
        raise BadInput(f"--trials {opts.trials}: must be at least 1")
    if opts.workers < 1 or opts.workers > 256:
        raise BadInput(f"--workers {opts.workers}: must be between 1 and 256")
    if opts.timeout is not None and opts.timeout <= 0:
        raise BadInput(f"--timeout {opts.timeout}: must be a number of seconds > 0")
    if opts.reeval_top < 0:
        raise BadInput(f"--reeval-top {opts.reeval_top}: must be 0 or more")
    if opts.heartbeat < 1:
        raise BadInput(f"--heartbeat {opts.heartbeat}: must be at least 1 second")
    if opts.hypergradient is not None and not opts.hypergradient > 0:
        raise BadInput(f"--hypergradient {opts.hypergradient}: the hypergradient step beta must be > 0")
    SAMPLERS.check(opts.sampler, key="--sampler")
    if opts.pruner is not None:
        PRUNERS.check(opts.pruner, key="--pruner")
    path = Path(opts.config)
    data, node = _read_yaml(path)
    origin = apply_overrides(data, list(opts.overrides))
    cfg = validate(copy.deepcopy(data), source=str(path), node=node, origin=origin)
    space = Space.from_file(opts.space)
    space.check(data, _validate)
    if opts.sampler == "grid":
        space.grid()  # a float range without step or points is refused here
    # The data, once: bad data fails here, and the task decides the objectives.
    from methodo import stages

    prep = stages.prepare(cfg)
    task = prep.ds.task
    del prep
    objectives = parse_objectives(opts.objectives, task)
    multi = len(objectives) > 1
    if multi and not SAMPLERS.entry(opts.sampler).meta.get("multi_objective"):
        ok = [n for n in SAMPLERS.names() if SAMPLERS.entry(n).meta.get("multi_objective")]
        raise BadInput(f"--sampler {opts.sampler}: optimizes one objective; with several --objectives use "
                       + ", ".join(ok))
    pruner = opts.pruner or ("none" if multi else "median")
    if multi and pruner != "none":
        raise BadInput(f"--pruner {pruner}: Optuna prunes single-objective studies only; with several "
                       "--objectives use --pruner none")
    opts.pruner = pruner
    PRUNERS.get(pruner)(epochs=cfg.train.epochs)  # hyperband:N with N past train.epochs is refused here
    budget = opts.trials
    if opts.sampler == "grid":
        size = space.grid_size()
        if size < budget:
            print(f"tune: the grid has {size} points; the study stops at {size} trials", file=sys.stderr)
            budget = size
    storage = opts.storage or os.environ.get("METHODO_TUNE_STORAGE") or DEFAULT_STORAGE
    text = space.text
    threads = None
    if opts.workers > 1 and cfg.train.threads is None:
        threads = max(1, (os.cpu_count() or 1) // opts.workers)
    deadline = time.time() + opts.timeout if opts.timeout else None
    return Context(opts, data, str(path), space.to_dict(), text, task, objectives, storage,
                   opts.study or cfg.name, budget, cfg.train.epochs, deadline, threads=threads)


# --------------------------------------------------------------------------- storage, study, budget lock


def driver_url(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) with the driver methodo ships: psycopg2 (SQLAlchemy 2.1 would
    otherwise pick psycopg 3)."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare):]
    return url


def open_storage(url: str, heartbeat: int):
    """Optuna's RDB storage for ``url`` with heartbeats; a storage that cannot be reached is bad input."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scheme = url.split(":", 1)[0]
    if url == ":memory:" or scheme == "memory":
        return optuna.storages.InMemoryStorage()
    if not scheme.startswith(("sqlite", "postgresql", "mysql")):
        raise BadInput(f"--storage {redact(url)}: a sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB or "
                       "mysql://... URL")
    kwargs: dict[str, Any] = {}
    if scheme.startswith("sqlite"):
        db = Path(url.split("///", 1)[-1])
        if db.parent != Path("") and not db.parent.is_dir():
            raise BadInput(f"--storage {url}: folder {db.parent} does not exist")
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}} if scheme.startswith(
            "postgresql") else {"pool_pre_ping": True}
    try:
        with warnings_off():
            return RDBStorage(driver_url(url), engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except ImportError as exc:
        raise BadInput(f"--storage {redact(url)}: its database driver is not installed ({exc})") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError, ArgumentError: no server, bad URL
        msg = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise BadInput(f"--storage {redact(url)}: cannot open the study storage ({msg})") from None


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def budget_lock(storage, url: str, study: str):
    """Hold the study's budget lock: counting trials and asking for one is atomic across workers
    (a file lock beside a SQLite file, an advisory lock in PostgreSQL; none in memory)."""
    scheme = url.split(":", 1)[0]
    if scheme.startswith("sqlite"):
        from methodo.track import store_lock  # the same lock file MLflow's SQLite store uses, beside the file

        with store_lock(url):
            yield
    elif scheme.startswith("postgresql"):
        from sqlalchemy import text

        key = zlib.crc32(f"methodo.tune:{study}".encode())
        with storage.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    else:
        yield


def counted(trials) -> list:
    """The trials that use up the budget: all but those failed and retried (their retry counts)."""
    retried = set()
    for t in trials:
        retried.update(t.system_attrs.get("retry_history", []))
    return [t for t in trials if not (t.state.name == "FAIL" and t.number in retried)]


def open_study(ctx: Context, storage, *, create: bool):
    import optuna

    from methodo.tune.samplers import PRUNERS, SAMPLERS

    with warnings_off():  # "experimental feature" notes of Optuna's options
        sampler = SAMPLERS.get(ctx.opts.sampler)(ctx.space, seed=_seed(ctx) + _worker_index(),
                                                 trials=ctx.budget, objectives=len(ctx.objectives))
    pruner = PRUNERS.get(ctx.opts.pruner)(epochs=ctx.epochs)
    directions = [o.direction for o in ctx.objectives]
    with warnings_off():
        if not create:
            return optuna.load_study(study_name=ctx.study_name, storage=storage, sampler=sampler, pruner=pruner)
        study = optuna.create_study(storage=storage, study_name=ctx.study_name, sampler=sampler, pruner=pruner,
                                    directions=directions, load_if_exists=True)
    attrs = study.user_attrs
    mine = {"methodo.config": ctx.base, "methodo.space": ctx.space_dict,
            "methodo.objectives": [str(o) for o in ctx.objectives]}
    if "methodo.config" not in attrs:
        for k, v in mine.items():
            study.set_user_attr(k, v)
    else:
        for k, what in (("methodo.config", "config"), ("methodo.space", "search space"),
                        ("methodo.objectives", "objectives")):
            if _canon(attrs.get(k)) != _canon(mine[k]):
                raise BadInput(f"--study {ctx.study_name}: the study in {redact(ctx.storage_url)} was started with "
                               f"another {what}; continue it with the same one, or start a new study "
                               "(--study NEW_NAME)")
    return study


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _seed(ctx: Context) -> int:
    if ctx.opts.sampler_seed is not None:
        return ctx.opts.sampler_seed
    return int(ctx.base.get("seed", 0) or 0)


def _worker_index() -> int:
    return int(os.environ.get("METHODO_TUNE_WORKER", "0"))


# --------------------------------------------------------------------------- the worker loop


def work(ctx: Context) -> int:
    """Run trials until the study holds its budget; returns how many this worker ran."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import get_heartbeat_thread  # the thread study.optimize uses
    from optuna.trial import TrialState

    storage = open_storage(ctx.storage_url, ctx.opts.heartbeat)
    study = open_study(ctx, storage, create=False)
    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)
    tracker = _tracker(ctx)
    space = ctx.space
    ran = 0
    while True:
        if ran and ctx.deadline is not None and time.time() >= ctx.deadline:
            break  # --timeout: no new trial (each worker runs one at least, as Optuna's timeout)
        with budget_lock(storage, ctx.storage_url, ctx.study_name):
            with warnings_off():
                fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                waiting = any(t.state == TrialState.WAITING for t in trials)
                room = len(counted(trials)) < ctx.budget
                running = [t for t in trials if t.state == TrialState.RUNNING]
                trial = study.ask() if waiting or room else None
        if trial is None:
            if running and ctx.deadline is None:  # another worker's trial: if it dies, its retry is ours
                time.sleep(min(ctx.opts.heartbeat, 2))
                continue
            break
        with get_heartbeat_thread(trial._trial_id, storage):
            state, values = run_optuna_trial(ctx, study, trial, space, tracker)
        with warnings_off():
            if state == "COMPLETE":
                study.tell(trial, values)
            else:
                study.tell(trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
        ran += 1
    return ran


def _tracker(ctx: Context):
    from methodo.tune.track import NullStudyTracker, StudyTracker

    if not ctx.mlflow:
        return NullStudyTracker()
    return StudyTracker(ctx.mlflow["uri"], ctx.mlflow["experiment_id"], ctx.mlflow["parent_run_id"])


def run_optuna_trial(ctx: Context, study, trial, space, tracker) -> tuple[str, list | None]:
    """One trial of the study: sample its config, validate it, train, score; returns (state, values)."""
    from methodo.errors import ConfigError
    from methodo.tune.space import label_of, set_key
    from methodo.tune.trial import prune_key, run_trial

    t0 = time.perf_counter()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    data, got = space.suggest(trial, ctx.base)  # the sampler works here (study machinery: counted as overhead)
    if ctx.threads:
        set_key(data, "train.threads", ctx.threads)
    trial.set_user_attr("config", data)
    child = tracker.trial(trial.number, {k: label_of(v) for k, v in got.items()})
    trial.set_user_attr("mlflow_run_id", child.run_id)
    overhead = [time.perf_counter() - t0]
    try:
        cfg = _validate(copy.deepcopy(data), f"trial {trial.number}")
    except ConfigError as exc:
        return _end(trial, child, "FAIL", None, error=f"invalid config: {exc}", t0=t0, overhead=overhead)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"progress": False})})
    single = len(ctx.objectives) == 1
    key, _ = prune_key(ctx.task, ctx.objectives[0])

    def on_epoch(row: dict) -> bool:
        t = time.perf_counter()
        child.log_epoch(row)
        stop = False
        if single and key in row:
            trial.report(float(row[key]), int(row["epoch"]))
            # not after the last epoch: its training is spent, and pruning it would only throw its score away
            # (Hyperband's first bracket has a rung at max_resource = train.epochs)
            stop = int(row["epoch"]) < cfg.train.epochs and trial.should_prune()
        overhead[0] += time.perf_counter() - t
        return stop

    out = run_trial(cfg, ctx.objectives, on_epoch=on_epoch)
    t = time.perf_counter()
    trial.set_user_attr("history", [{k: v for k, v in r.items()} for r in out.history])
    trial.set_user_attr("epochs_run", out.epochs_run)
    trial.set_user_attr("best_epoch", out.best_epoch)
    if out.metrics:
        trial.set_user_attr("val_metrics", out.metrics)
    overhead[0] += time.perf_counter() - t
    return _end(trial, child, out.state, out.values, error=out.error, t0=t0, overhead=overhead,
                metrics={f"val_{k}": v for k, v in (out.metrics or {}).items()})


def _end(trial, child, state: str, values, *, error: str | None, t0: float, overhead: list,
         metrics: dict | None = None):
    t = time.perf_counter()
    if error:
        trial.set_user_attr("error", error[:2000])
    child.end_trial(state, metrics or {}, error)
    overhead[0] += time.perf_counter() - t
    trial.set_user_attr("duration_s", round(time.perf_counter() - t0, 4))
    trial.set_user_attr("overhead_s", round(overhead[0], 4))
    shown = "" if values is None else " " + " ".join(f"{v:.4g}" for v in values)
    why = f" ({error})" if error else ""
    print(f"trial {trial.number} {state}{shown}{why}", file=sys.stderr, flush=True)
    return state, values


def _worker_main(ctx: Context, index: int) -> None:
    """A worker process (``--workers K``): its own storage connection, sampler seed and trials."""
    os.environ["METHODO_TUNE_WORKER"] = str(index)
    try:
        work(ctx)
    except KeyboardInterrupt:
        sys.exit(130)


def run_workers(ctx: Context) -> list[int | None]:
    """K worker processes (spawned: a fresh interpreter each, no forked torch state); their exit codes."""
    import multiprocessing as mp

    # forkserver: one fresh server process imports torch and methodo's training stages once, and each
    # worker is forked from it (no worker inherits this process's torch threads or open connections;
    # K workers do not pay K imports)
    spawn = mp.get_context("forkserver")
    spawn.set_forkserver_preload(["methodo.tune.worker_preload"])
    procs = [spawn.Process(target=_worker_main, args=(ctx, i + 1), name=f"methodo-tune-{i + 1}")
             for i in range(ctx.opts.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(10)
        raise
    for i, p in enumerate(procs, 1):
        if p.exitcode:
            how = f"signal {-p.exitcode}" if p.exitcode < 0 else f"exit code {p.exitcode}"
            print(f"tune: worker {i} (pid {p.pid}) ended by {how}; a trial it left running is retried by "
                  "the others (heartbeat)", file=sys.stderr)
    return [p.exitcode for p in procs]


# --------------------------------------------------------------------------- the command


def tune(opts: TuneOptions) -> TuneResult:
    """Run ``methodo tune`` (see the module doc for the call order); returns the study's record."""
    from methodo.rundir import RunDir

    ctx = prepare_context(opts)
    _check_out(opts.out)  # before the study is created: a bad --out leaves nothing behind
    storage = open_storage(ctx.storage_url, opts.heartbeat)
    study = open_study(ctx, storage, create=True)
    cfg = _validate(copy.deepcopy(ctx.base), ctx.source)
    ctx.mlflow = _start_tracking(cfg, ctx, study)
    try:
        rd = RunDir.create(opts.out, name=cfg.name, kind="tune")
    except BaseException:
        _end_tracking(ctx, "FAILED", None, [])
        raise
    t0 = time.perf_counter()
    try:
        if opts.workers > 1:
            run_workers(ctx)
        work(ctx)  # the rest: trials no worker finished (all of them, with one worker)
    except BaseException:
        _end_tracking(ctx, "KILLED", None, [])
        raise
    from methodo.tune.results import finish

    record = finish(ctx, study, rd, wall_s=time.perf_counter() - t0)
    files = [rd.file(n) for n in ("tune.json", "best.yaml", "tune.html", "trials.csv") if rd.has(n)]
    _end_tracking(ctx, "FINISHED", record.get("best"), files)
    return TuneResult(rd.path, ctx.study_name, record)


def _check_out(out: str | None) -> None:
    """``--out`` must be a new or empty folder (as :meth:`RunDir.create` will check again when it claims it)."""
    if out is None:
        return
    path = Path(out)
    if str(out) == "":
        raise BadInput("--out '': give a folder name")
    if path.exists() and not path.is_dir():
        raise BadInput(f"--out {out}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise BadInput(f"--out {out}: folder is not empty; choose a new or empty folder (methodo never writes over "
                       "your files)")


def _start_tracking(cfg, ctx: Context, study) -> dict | None:
    if not cfg.track.mlflow:
        return None
    from methodo.track import store_problem
    from methodo.tune.track import StudyTracker, tracking_uri

    uri = tracking_uri(cfg.track)
    why = store_problem(uri)
    if why is not None:
        if cfg.track.required:
            raise BadInput(f"track.tracking_uri: the MLflow store {uri} cannot be used: {why}; start it or fix the "
                           "URI, or tune untracked with track.mlflow=false")
        print(f"warning: the MLflow store {uri} cannot be used ({why}); the study is not tracked", file=sys.stderr)
        return None
    params = {"study": ctx.study_name, "storage": redact(ctx.storage_url), "sampler": ctx.opts.sampler,
              "pruner": ctx.opts.pruner, "trials": ctx.budget, "objectives": ",".join(map(str, ctx.objectives)),
              **{f"space.{k}": json.dumps(v, default=str) for k, v in ctx.space_dict.items()}}
    tr = StudyTracker.start(uri, cfg.track.experiment or cfg.name, ctx.study_name, params,
                            parent_run_id=study.user_attrs.get("methodo.mlflow_parent_run_id"))
    study.set_user_attr("methodo.mlflow_parent_run_id", tr.parent_run_id)
    return {"uri": uri, "experiment_id": tr.experiment_id, "parent_run_id": tr.parent_run_id}


def _end_tracking(ctx: Context, status: str, best: dict | None, files: list) -> None:
    if not ctx.mlflow:
        return
    with contextlib.suppress(Exception) if status != "FINISHED" else contextlib.nullcontext():
        _tracker(ctx).finish(status, best=best, files=files)


def _check_done(study, ctx: Context) -> None:
    """No trial RUNNING, and at least one COMPLETE (else the study failed: say why)."""
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if not done:
        errors = [t.user_attrs.get("error") for t in trials if t.user_attrs.get("error")]
        raise RunFailed(f"no trial of study {ctx.study_name} completed ({len(trials)} trials)"
                        + (f"; first error: {errors[0]}" if errors else ""))


__all__ = ["TuneOptions", "TuneResult", "tune", "work", "open_storage", "counted", "ConfigError"]
