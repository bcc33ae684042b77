"""The stages of a run, each a function with explicit inputs and outputs (``pipeline.run`` calls them in order).

A stage reads what it needs from its arguments and returns what it made; the run record
(:class:`~methodo.record.RunRecord`) is the one object several stages fill, field by field. Stages that
write go through the :class:`~methodo.rundir.RunDir`. Everything that can be wrong with the user's input
is checked by the stages before :func:`open_run` (config, data, model, checkpoint to resume), so a bad
input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methodo.config import Config, dump_yaml, flat_params, load_config
from methodo.errors import BadInput, ConfigError, DataError, RunFailed
from methodo.record import DataInfo, FindingRecord, ModelInfo, RunRecord, SplitInfo
from methodo.rundir import LAYOUT, RunDir


@dataclass
class Prepared:
    """Steps 1-2: the validated config (task resolved), the dataset, its prepared splits and the model."""

    cfg: Config
    ds: Any  # methodo.data.sources.Dataset
    data: Any  # methodo.data.preprocess.PreparedData
    model: Any  # torch.nn.Module
    spec: Any  # methodo.tasks.TaskSpec

    @property
    def class_weights(self):
        return self.data.class_weights  # data.balance: class_weights (else None)

    @property
    def n_classes(self) -> int:
        """Classes per row or pixel; for language modeling the vocabulary size (0 for regression)."""
        return self.ds.n_classes or len(self.ds.vocab or [])


class Diverged(RunFailed):
    """Training stopped on a non-finite or exploding loss; carries the finding that explains it."""

    def __init__(self, msg: str, *, finding, failure: str):
        super().__init__(msg)
        self.finding, self.failure = finding, failure


class Clock:
    """The wall time of each stage of a run (``summary.json`` → ``timings``), measured here and nowhere else.

    ``with clock("train"): ...`` adds the block's seconds to ``train``, also when it raises, so a failed
    run's summary still says where its time went. With :meth:`log_lines` on (progress on, stderr a log
    file), each finished stage is one line on stderr: ``stage train: 12.34 s`` (`` (failed)`` when it raised).
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.lines = False

    @contextlib.contextmanager
    def __call__(self, name: str, *, when: bool = True):
        if not when:
            yield
            return
        t0, failed = time.perf_counter(), True
        try:
            yield
            failed = False
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            if self.lines:
                self._line(name, dt, failed)

    def log_lines(self, progress: bool) -> None:
        """Write a line per finished stage from now on when ``progress`` and stderr is not a terminal;
        the stages already timed get theirs now. The pipeline calls it once the run dir exists, so a
        bad input found before stays one ``error:`` line."""
        from methodo.progress import lines

        self.lines = lines(progress)
        for name, dt in self.seconds.items() if self.lines else ():
            self._line(name, dt, False)

    @staticmethod
    def _line(name: str, seconds: float, failed: bool) -> None:
        print(f"stage {name}: {seconds:.2f} s" + " (failed)" * failed, file=sys.stderr, flush=True)

    def timings(self) -> dict[str, float]:
        """Seconds per stage in the order they ran, and ``total`` since the clock started."""
        total = round(time.perf_counter() - self.start, 3)
        return {**{k: round(v, 3) for k, v in self.seconds.items()}, "total": total}


# --------------------------------------------------------------------------- 0. config


def resolve_config(config: str | Path | Config | None, overrides, resume: str | Path | None
                   ) -> tuple[Config, RunDir | None]:
    """The config to run: from a file (+ overrides), a Config object, or the run dir being resumed."""
    if resume is not None:
        rd = RunDir.open(resume, needs="config", flag="--resume")
        return load_config(rd.file(LAYOUT["config"]), overrides), rd
    if isinstance(config, Config):
        return config, None
    return load_config(config, overrides), None


# --------------------------------------------------------------------------- 1-2. data and model


def prepare(cfg: Config, clock: Clock | None = None) -> Prepared:
    """Seed everything, load and check the data, split it, fit scaling on the training split only, and
    build the model sized from the data. Writes nothing. ``methodo lr-find`` uses it too.

    ``clock`` times loading as ``load`` and the rest (split, features, scaling, the model) as ``prepare``."""
    import torch

    from methodo.data import load_dataset, prepare as prepare_data
    from methodo.evaluate import check_metric_names
    from methodo.models import build_model
    from methodo.seed import seed_everything
    from methodo.tasks import task_spec
    from methodo.train.loop import check_batch_size, epoch_metric_names, resolve_device

    clock = clock or Clock()
    # 1. Data: load, check the task, split, fit scaling on train only.
    seed_everything(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    with clock("load"):
        ds = load_dataset(cfg.data)
    if cfg.task is not None and cfg.task != ds.task:
        raise ConfigError(f"task: dataset {ds.name!r} is a {ds.task} dataset (got task: {cfg.task}); "
                          f"use task: {ds.task} or omit it")
    cfg = cfg.model_copy(update={"task": ds.task})
    if cfg.train.early_stopping and cfg.train.early_stopping.monitor not in epoch_metric_names(ds.task):
        raise ConfigError(f"train.early_stopping.monitor: {cfg.train.early_stopping.monitor!r} is not an "
                          f"epoch metric of this task; choose one of {epoch_metric_names(ds.task)}")
    with clock("prepare"):
        data = prepare_data(ds, cfg.data, cfg.seed)
    n_fit = len(data.tensors["train"][1])
    if cfg.train.batch_size > n_fit and n_fit != len(data.indices["train"]):
        raise DataError(f"train.batch_size={cfg.train.batch_size} is larger than the training split after "
                        f"data.balance={cfg.data.balance} ({n_fit} rows); use at most {n_fit}")
    check_batch_size(cfg.train.batch_size, n_fit)
    check_metric_names(ds.task, cfg.evaluate.metrics)
    resolve_device(cfg.train.device)  # `cuda` without a GPU is bad input, found before anything is written
    spec = task_spec(ds.task)
    if cfg.evaluate.label_issues == "cross_val":
        check_cross_val(cfg, ds, spec)

    # 2. Model, sized from the data (after feature steps).
    with clock("prepare"):
        model = build_model(cfg.model.name, input_shape=data.input_shape, n_outputs=data.n_outputs,
                            kind=ds.kind, task=ds.task, **cfg.model.options)
    return Prepared(cfg, ds, data, model, spec)


def check_cross_val(cfg: Config, ds, spec) -> None:
    """``evaluate.label_issues: cross_val`` needs labels to check and folds the data can fill."""
    from methodo.data.split import split_indices
    from methodo.evaluate.label_issues import check_folds

    if spec.label_issues is None:
        raise ConfigError(f"evaluate.label_issues: cross_val looks for wrong labels, and a {ds.task} dataset has "
                          "none to check (classification and multilabel tasks); use val_test (the default)")
    K = cfg.evaluate.label_folds
    check_folds(K, len(ds.y), flag="evaluate.label_folds")
    try:
        split_indices(ds.y, method="kfold", val=cfg.data.split.val, test=0.0, seed=cfg.seed, task=ds.task,
                      folds=K, fold=1)
    except DataError as exc:
        raise ConfigError(f"evaluate.label_folds={K}: {str(exc).split(': ', 1)[-1]}") from None


def check_resume(rd: RunDir | None, prep: Prepared) -> Path | None:
    """The checkpoints folder to resume from, after checking its ``last`` checkpoint fits the model.

    ``None`` when not resuming, or when the run was killed before its first epoch ended (it then starts
    again from scratch in the same dir). A damaged or incompatible checkpoint is bad input, found here,
    before anything is written: the run dir stays as it was.
    """
    if rd is None:
        return None
    rd.check_integrity(what="it cannot be resumed")
    _check_resume_epochs(rd, prep.cfg)
    if not rd.has(f"{LAYOUT['checkpoints']}/last.safetensors"):
        print(f"--resume {rd.path}: no checkpoint yet, starting from epoch 1", file=sys.stderr)
        return None
    from methodo.train.checkpoint import load_checkpoint

    last = rd.file(f"{LAYOUT['checkpoints']}/last.safetensors")
    weights, state, _ = load_checkpoint(last)
    if not isinstance(state, dict) or "epoch" not in state:
        raise BadInput(f"{last}: holds weights but no training state; it cannot be resumed")
    own = prep.model.state_dict()
    _check_fits(last, weights, own, rd)
    # the other checkpoints the resume reads: the best weights (when saved) and the snapshots taken so far
    others = ["best.safetensors"] * rd.has(f"{LAYOUT['checkpoints']}/best.safetensors")
    others += [str(sn.get("file")) for sn in state.get("snapshots") or [] if isinstance(sn, dict)]
    for name in others:
        path = rd.file(f"{LAYOUT['checkpoints']}/{name}")
        _check_fits(path, load_checkpoint(path)[0], own, rd)
    oc = prep.cfg.train.optimizer
    if oc.lr != "auto":  # the optimizer's saved state must load into the optimizer the config builds
        from methodo.train.optim import build_optimizer

        try:
            opt = build_optimizer(prep.model.parameters(), oc.name, oc.lr, oc.options)
            saved, built = state["optimizer"]["param_groups"], opt.state_dict()["param_groups"]
            # another optimizer's hyper-parameters (a scheduler adds its own keys, e.g. initial_lr, to the saved ones)
            if len(saved) != len(built) or any(not set(b) <= set(a) for a, b in zip(saved, built)):
                raise ValueError(f"the checkpoint's optimizer has the options {sorted(set(saved[0]) - {'params'})}")
            opt.load_state_dict(state["optimizer"])
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as exc:
            raise BadInput(f"{last}: its optimizer state does not fit train.optimizer ({oc.name}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); resume with the "
                           "config the run started with") from None
    return rd.checkpoints


def _check_fits(path: Path, weights: dict, own: dict, rd: RunDir) -> None:
    """The checkpoint's weights have exactly the model's names and shapes."""
    for k, v in own.items():
        if k not in weights or tuple(weights[k].shape) != tuple(v.shape):
            got = "missing" if k not in weights else f"shape {tuple(weights[k].shape)}"
            raise BadInput(f"{path}: does not fit the model of {rd.file(LAYOUT['config'])} ({k}: {got}, the "
                           f"model has {tuple(v.shape)}); resume with the config the run started with")
    extra = sorted(set(weights) - set(own))
    if extra:
        raise BadInput(f"{path}: has weights the model does not ({extra[0]}); resume with the config the run "
                       "started with")


def _check_resume_epochs(rd: RunDir, cfg: Config) -> None:
    """A schedule planned over the run's epochs (one-cycle, cosine, ...) cannot be stretched on resume."""
    from methodo.train.schedules import SCHEDULERS

    started = load_config(rd.file(LAYOUT["config"])).train
    sc = cfg.train.scheduler
    if started.epochs != cfg.train.epochs and sc.name in SCHEDULERS and SCHEDULERS.entry(sc.name).meta.get(
            "horizon", True):
        raise BadInput(f"train.epochs: the run started with {started.epochs} epochs and its {sc.name!r} schedule "
                       f"is planned over them; resuming with {cfg.train.epochs} would step past its end. Resume "
                       "with the same train.epochs, or start a new run (schedulers without a horizon: none, "
                       "exponential, plateau)")


def auto_lr(prep: Prepared, clock: Clock | None = None) -> tuple[Prepared, Any, list[str]]:
    """``lr=auto`` / ``max_lr=auto``: the LR range test picks the LR (model and RNGs restored after).

    Returns the prepared run with the LR filled in, the finder's result (or None) and the keys it set.
    ``clock`` times the range test as ``lr_find`` (only when it runs).
    """
    cfg = prep.cfg
    keys = [k for k, v in (("train.optimizer.lr", cfg.train.optimizer.lr),
                           ("train.scheduler.max_lr", cfg.train.scheduler.options.get("max_lr"))) if v == "auto"]
    if not keys:
        return prep, None, []
    from methodo.train.lr_find import resolve_auto_lr

    try:
        with (clock or Clock())("lr_find"):
            tcfg, found = resolve_auto_lr(prep.model, prep.data, cfg.train, seed=cfg.seed,
                                          class_weights=prep.class_weights)
    except ValueError as exc:
        raise BadInput(f"train.lr_find: {exc}") from None
    return Prepared(cfg.model_copy(update={"train": tcfg}), prep.ds, prep.data, prep.model, prep.spec), found, keys


def audit(prep: Prepared) -> list:
    """Data findings (leakage, duplicates across splits, imbalance, ...) on the split data."""
    from methodo.data.audit import AuditFacts, audit as audit_data

    return audit_data(AuditFacts.from_dataset(prep.ds, prep.data.indices), max_queries=2000,
                      progress=prep.cfg.train.progress)


# --------------------------------------------------------------------------- 3. the run dir


def versions() -> dict[str, str]:
    import torch

    from methodo import __version__

    return {"methodo": __version__, "torch": torch.__version__, "python": platform.python_version()}


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def new_record(prep: Prepared, *, resumed: bool) -> RunRecord:
    """The record of a run about to start: what the data stage did and the model's size."""
    cfg, ds, data, spec = prep.cfg, prep.ds, prep.data, prep.spec
    splits = {s: SplitInfo(n=int(len(ix)), class_counts=data.class_counts.get(s) if data.class_counts else None)
              for s, ix in data.indices.items()}
    if data.class_counts_before_balancing is not None:
        splits["train"].class_counts_before_balancing = data.class_counts_before_balancing
        splits["train"].n_after_balancing = int(len(data.tensors["train"][1]))
    info = DataInfo(
        description=ds.description, kind=ds.kind, input_shape=list(ds.input_shape), n=int(len(ds.y)),
        classes=ds.class_names, splits=splits, balance=cfg.data.balance,
        class_weights=(None if data.class_weights is None else
                       {c: round(float(w), 6) for c, w in zip(ds.class_names, data.class_weights)}),
        features=({"steps": cfg.data.features, "names": data.feature_names, "n": len(data.feature_names)}
                  if ds.kind == "tabular" else None),
        augment=cfg.data.augment or None, count_unit=spec.count_unit,
        extra=({s: {"n": int(len(X)), "description": ds.extra_descriptions.get(s, "")}
                for s, (X, _) in ds.extra.items()} if ds.extra else None))
    return RunRecord(name=cfg.name, task=ds.task, dataset=ds.name, seed=cfg.seed, world_size=world_size(),
                     data=info, model=ModelInfo(name=cfg.model.name,
                                                parameters=int(sum(p.numel() for p in prep.model.parameters()))),
                     versions=versions(), git_commit=git_commit(), resumed=resumed)


def connect_tracking(cfg: Config):
    """The tracker, its store checked before anything is written (``methodo.track.connect``)."""
    from methodo.track import connect

    return connect(cfg.track, cfg.name)


def open_run(prep: Prepared, tracker, *, out, resume_rd: RunDir | None, resumed: bool, lr_found=None,
             lr_keys: list[str] = ()) -> tuple[RunDir, RunRecord]:
    """Create (or reopen) the run dir, write the run's inputs, and start tracking.

    Writes ``config.yaml`` (resolved), ``preprocessor.json``, ``features.skops`` (tables with feature
    steps), the LR finder's result, and a first ``summary.json`` with status ``running``.
    """
    from methodo.data.features import save_pipeline

    cfg, data = prep.cfg, prep.data
    rd = resume_rd if resume_rd is not None else RunDir.create(out, name=cfg.name)
    rd.make_layout()
    record = new_record(prep, resumed=resumed)
    rd.write_text(LAYOUT["config"], dump_yaml(cfg))
    rd.write_text(LAYOUT["preprocessor"], data.preprocessor.to_json())
    write_splits_csv(rd, data.indices)
    if data.features is not None:  # the fitted feature Pipeline, saved with the model (skops: no pickle)
        save_pipeline(data.features, rd.file(LAYOUT["features"]))
    if lr_found is not None:
        from methodo.train.lr_find import write as write_lr_find

        write_lr_find(lr_found, rd.path, figure=rd.figure("lr_find.png"))
        record.lr_find = {"suggested_lr": lr_found.suggested_lr, "suggestion": lr_found.suggestion,
                          "suggestions": lr_found.suggestions, "steps": len(lr_found.lrs),
                          "diverged": lr_found.diverged, "applied_to": list(lr_keys)}
    elif resume_rd is not None and rd.has(LAYOUT["lr_find"]):  # found before the interruption
        found = rd.read_json(LAYOUT["lr_find"])
        record.lr_find = {k: found[k] for k in ("suggested_lr", "suggestion", "suggestions", "diverged")}
    params = flat_params(cfg)
    params["world_size"] = record.world_size
    tracker.start(params, {"methodo.run_dir": str(rd.path.resolve()), "methodo.run_name": rd.path.name,
                           "methodo.dataset": prep.ds.name})
    record.mlflow_run_id = tracker.run_id
    rd.write_record(record)
    return rd, record


def write_splits_csv(rd: RunDir, indices: dict) -> None:
    """``splits.csv``: every row of the dataset (its row id, as in the prediction files) and its split,
    by row id. Written by Arrow from arrays (10⁷ rows in about 2 s, no Python object per row), in the
    bytes :meth:`RunDir.write_csv` would write (``\\r\\n`` line ends, nothing quoted)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = list(indices)
    rows = np.concatenate([np.asarray(indices[k], dtype=np.int64).ravel() for k in names] or [np.zeros(0, np.int64)])
    split = np.concatenate([np.full(np.asarray(indices[k]).size, i, dtype=np.int32) for i, k in enumerate(names)]
                           or [np.zeros(0, np.int32)])
    order = np.argsort(rows, kind="stable")
    table = pa.table({"row": rows[order],
                      "split": pa.DictionaryArray.from_arrays(pa.array(split[order]), pa.array(names, pa.string()))})
    out = pa.BufferOutputStream()
    pacsv.write_csv(table, out, pacsv.WriteOptions(quoting_style="none", quoting_header="none", batch_size=1 << 16))
    rd.write_bytes(LAYOUT["splits"], out.getvalue().to_pybytes().replace(b"\n", b"\r\n"))


# --------------------------------------------------------------------------- 4. train


class EpochLog:
    """The loop's ``on_epoch``: keeps the epoch rows, rewrites ``metrics.csv``, logs to tracking."""

    def __init__(self, rd: RunDir, tracker, history: list[dict]):
        self.rd, self.tracker, self.history = rd, tracker, history

    def __call__(self, row: dict) -> None:
        self.history.append(row)
        write_metrics_csv(self.rd, self.history)
        self.tracker.log_epoch(row)


def write_metrics_csv(rd: RunDir, history: list[dict]) -> None:
    if history:
        rd.write_csv(LAYOUT["metrics"], list(history[0]), ([r.get(k, "") for k in history[0]] for r in history))


def train(prep: Prepared, rd: RunDir, record: RunRecord, tracker, *, resume_from: Path | None):
    """Train (the best weights by the monitor end up in the model); fills the training fields of the record.

    Raises :class:`Diverged` (a :class:`RunFailed`) with the explaining finding when the loss goes
    non-finite or explodes.
    """
    import numpy as np

    from methodo import diagnose as dg, signals
    from methodo.train.checkpoint import load_checkpoint
    from methodo.train.loop import NonFiniteLoss, fit

    cfg = prep.cfg
    history = list(load_checkpoint(resume_from / "last.safetensors")[1]["history"]) if resume_from else []
    log = EpochLog(rd, tracker, history)  # metrics.csv keeps the epochs run before an interruption
    try:
        res = fit(prep.model, prep.data, cfg.train, seed=cfg.seed, ckpt_dir=rd.checkpoints,
                  class_weights=prep.class_weights, on_epoch=log, resume_from=resume_from)
    except NonFiniteLoss as exc:
        lr = cfg.train.optimizer.lr
        record.epochs_run = len(log.history)
        finding = dg.non_finite_loss(exc.epoch, exc.step, exc.value, lr, exc.limit, tensor=exc.tensor)
        raise Diverged(f"training stopped: {exc} (lr={lr}); run dir {rd.path}", finding=finding,
                       failure=str(exc)) from None
    signals.check()
    write_metrics_csv(rd, res.history)
    write_steps_csv(rd, res, len(prep.data.indices["train"]), cfg.train)
    record.epochs_run, record.best_epoch, record.stopped_early = res.epochs_run, res.best_epoch, res.stopped_early
    record.training = {
        "optimizer_steps": len(res.lrs), "skipped_batches": res.skipped_batches,
        "grad_norm": ({"median": float(np.median(res.grad_norms)), "max": float(np.max(res.grad_norms)),
                       "clipped_to": cfg.train.clip.norm} if res.grad_norms else None),
    }
    if res.monitor:
        rd.write_json(LAYOUT["monitor"], res.monitor)
    series = {"step_lr": res.lrs, "step_loss": res.losses}
    if len(res.grad_norms) == len(res.lrs):
        series["step_grad_norm"] = res.grad_norms
    tracker.log_series(series)
    return res


def write_steps_csv(rd: RunDir, res, n_train: int, tcfg) -> None:
    """One row per optimizer step: epoch, LR, data loss and (when computed) the pre-clip gradient norm."""
    from methodo.train.loop import batches_per_epoch

    per_epoch = math.ceil(batches_per_epoch(n_train, tcfg.batch_size) / tcfg.accumulate)
    skipped: dict[int, int] = {}
    for sk in res.skipped_batches:  # a skipped batch took no optimizer step
        skipped[sk["epoch"]] = skipped.get(sk["epoch"], 0) + 1
    epochs = [e for e in range(1, res.epochs_run + 1) for _ in range(per_epoch - skipped.get(e, 0))]
    norms = res.grad_norms if len(res.grad_norms) == len(res.lrs) else [None] * len(res.lrs)
    rd.write_csv(LAYOUT["steps"], ["step", "epoch", "lr", "loss", "grad_norm"],
                 ([i + 1, epochs[i] if i < len(epochs) else "", f"{lr:.6g}", f"{loss:.6g}",
                   "" if g is None else f"{g:.6g}"] for i, (lr, loss, g) in enumerate(zip(res.lrs, res.losses, norms))))


# --------------------------------------------------------------------------- 5. evaluate


def predict_splits(prep: Prepared) -> dict:
    """The task's scores on every split and evaluation-only set, with the model's (best) weights."""
    from methodo.evaluate import predict

    data, spec = prep.data, prep.spec
    return {s: predict(prep.model, data.inputs(s), task=prep.ds.task, batch_size=prep.cfg.train.eval_batch_size,
                       inverse_y=data.preprocessor.inverse_y,
                       y=data.tensors[s][1] if spec.scores_need_targets else None)
            for s in data.tensors}


def evaluate(prep: Prepared, res, preds: dict, record: RunRecord, tracker) -> None:
    """Metrics of every split (the test split only here, once) with intervals, baselines, tables and the
    binary threshold; the reference model (noise or bias?); the free ensembles. Fills the record."""
    from methodo.evaluate import evaluate_splits

    cfg, ds, data = prep.cfg, prep.ds, prep.data
    record.update(evaluate_splits(ds.task, preds, data.raw_y, n_classes=prep.n_classes,
                                  class_names=ds.class_names, ecfg=cfg.evaluate, seed=cfg.seed,
                                  progress=cfg.train.progress))
    for split in ("test", *ds.extra):
        tracker.log_metrics({f"{split}_{k}": v for k, v in record.metrics[split].items()})
    if cfg.evaluate.reference and ds.kind == "tabular":  # reference_model says None for other tasks
        from methodo.evaluate.baselines import reference_model  # noise or bias? (the finding decides)

        record.reference = reference_model(ds.task, data.inputs("train").numpy(), data.raw_y["train"],
                                           data.inputs("val").numpy(), data.raw_y["val"], seed=cfg.seed,
                                           max_rows=cfg.evaluate.reference_max_rows)
    record.ensembles = evaluate_ensembles(prep, res)
    for name, e in record.ensembles.items():
        tracker.log_metrics({f"test_{name}_{k}": v for k, v in e.metrics["test"].items()})


def evaluate_ensembles(prep: Prepared, res) -> dict:
    """Val/test metrics of the snapshot ensemble and of the SWA model, when the run made them."""
    from methodo.evaluate import compute_metrics
    from methodo.train.swa import ensemble_predict

    data, spec, task = prep.data, prep.spec, prep.ds.task
    members = {}
    if res.snapshots:
        members["snapshot"] = ([s["weights"] for s in res.snapshots],
                               {"epochs": [s["epoch"] for s in res.snapshots],
                                "steps": [s["step"] for s in res.snapshots]})
    if res.swa_weights is not None:
        members["swa"] = ([res.swa_weights], {"epochs_averaged": res.swa_epochs})
    out = {}
    for name, (weights, info) in members.items():
        metrics = {}
        for split in ("val", "test"):
            X, Y = data.tensors[split]
            p = ensemble_predict(prep.model, weights, X, task=task, batch_size=prep.cfg.train.eval_batch_size,
                                 inverse_y=data.preprocessor.inverse_y, y=Y if spec.scores_need_targets else None)
            metrics[split] = compute_metrics(task, spec.metric_input(p), data.raw_y[split], prep.n_classes)
        out[name] = {"members": len(weights), **info, "metrics": metrics}
    return out


# --------------------------------------------------------------------------- 6. diagnose


def cross_fit(prep: Prepared):
    """``evaluate.label_issues: cross_val``: out-of-sample scores of every row by K-fold cross-fitting of
    the run's config (:func:`methodo.evaluate.label_issues.cross_fit`); None otherwise."""
    cfg = prep.cfg
    if cfg.evaluate.label_issues != "cross_val" or prep.spec.label_issues is None:
        return None
    from methodo.evaluate.label_issues import cross_fit as fit_folds

    return fit_folds(cfg, prep.ds, folds=cfg.evaluate.label_folds, flag="evaluate.label_folds",
                     progress=cfg.train.progress)


def label_issues(prep: Prepared, preds: dict, oos=None):
    """Rows whose label looks wrong (:class:`~methodo.evaluate.label_issues.LabelIssues`), by confident
    learning over out-of-sample scores: ``oos`` (every row, from :func:`cross_fit`) or else the run's
    own validation and test scores. None for tasks without labels to check."""
    import numpy as np

    from methodo.evaluate.label_issues import find_label_issues

    data, spec = prep.data, prep.spec
    if spec.label_issues is None:
        return None
    multilabel = spec.label_issues == "multilabel"
    if oos is not None:
        split_of = np.empty(len(prep.ds.y), dtype=object)
        for s, rows in data.indices.items():
            split_of[rows] = s
        return find_label_issues(oos, prep.ds.y, splits=split_of, class_names=prep.ds.class_names,
                                 multilabel=multilabel, method="cross_val", folds=prep.cfg.evaluate.label_folds)
    held_out = ("val", "test")
    return find_label_issues(
        np.concatenate([preds[s] for s in held_out]), np.concatenate([data.raw_y[s] for s in held_out]),
        rows=np.concatenate([data.indices[s] for s in held_out]),
        splits=np.concatenate([[s] * len(data.indices[s]) for s in held_out]),
        class_names=prep.ds.class_names, multilabel=multilabel)


def diagnose(prep: Prepared, res, preds: dict, record: RunRecord, history: list[dict], data_findings: list,
             issues=None) -> list:
    """The run's findings, most severe first: the data audit's and the checks on curves and predictions.
    Label errors come from ``issues`` (:func:`label_issues`: rows the models never trained on)."""
    import numpy as np

    from methodo import diagnose as dg

    data, spec = prep.data, prep.spec
    test_pred = test_true = None
    if spec.decide is not None:  # the checks look at one decided prediction per row (or pixel)
        test_pred, test_true = np.asarray(spec.decide(preds["test"])).ravel(), np.asarray(data.raw_y["test"]).ravel()
    facts = dg.Facts(
        task=prep.ds.task, history=history, metrics=record.metrics, baselines=record.baselines,
        test_pred=test_pred, test_true=test_true, intervals=(record.intervals or {}).get("test", {}),
        undefined=(record.undefined or {}).get("test", {}), class_names=prep.ds.class_names,
        lr=prep.cfg.train.optimizer.lr,
        label_issues=issues,
        monitor=res.monitor, skipped_batches=res.skipped_batches,
        reference=record.reference.model_dump() if record.reference else None)
    findings = sorted(data_findings + dg.diagnose(facts), key=lambda x: dg.SEVERITY_ORDER.get(x.severity, 9))
    record.findings = [FindingRecord.model_validate(f.to_dict()) for f in findings]
    return findings


# --------------------------------------------------------------------------- 7. outputs


@dataclass
class Outputs:
    """What a task's ``write_outputs`` may use: the run dir and record, the data, the scores, the findings."""

    rd: RunDir
    record: RunRecord
    cfg: Config
    ds: Any
    data: Any
    model: Any
    preds: dict
    findings: list = field(default_factory=list)

    label_issues: Any = None  # methodo.evaluate.label_issues.LabelIssues, or None

    def write_predictions(self, name: str, header: list[str], rows) -> Path:
        return self.rd.write_csv(name, header, rows)

    def write_split_predictions(self, header: list[str], rows) -> None:
        """``predictions_val.csv`` and ``predictions_test.csv``, the same columns: ``rows(split)`` yields the
        rows of one split."""
        for split in ("val", "test"):
            self.rd.write_csv(LAYOUT[f"predictions_{split}"], header, rows(split))

    def write_split_columns(self, header: list[str], columns) -> None:
        """The same files from whole columns, without a Python object per row: ``columns(split)`` gives
        one split's columns as :mod:`methodo.csvtext` makes them (the bytes ``csv.writer`` writes)."""
        from methodo import csvtext

        for split in ("val", "test"):
            self.rd.write_bytes(LAYOUT[f"predictions_{split}"], csvtext.join(header, columns(split)))


def write_outputs(prep: Prepared, rd: RunDir, record: RunRecord, res, preds: dict, findings: list,
                  clock: Clock | None = None, issues=None) -> None:
    """Learning curves and weights for every task, the task's own figures and prediction files, every
    label issue (``label_issues.csv``, when searched), the augmentation gallery (timed as ``figures``),
    and the explanations of the test predictions (captum, timed as ``explain``)."""
    from methodo.evaluate.label_issues import COLUMNS
    from methodo.report import plots

    cfg, ds, data, spec = prep.cfg, prep.ds, prep.data, prep.spec
    clock = clock or Clock()
    with clock("figures"):
        if issues is not None:
            rd.write_csv(LAYOUT["label_issues"], COLUMNS, issues.csv_rows())
        plots.learning_curves(res.history, res.lrs, rd.figure("learning_curves.png"), best_epoch=res.best_epoch,
                              grad_norms=res.grad_norms, clip=cfg.train.clip.norm)
        if res.monitor:
            plots.weight_distributions(res.monitor, rd.figure("weights.png"))
        if spec.write_outputs is not None:
            spec.write_outputs(Outputs(rd, record, cfg, ds, data, prep.model, preds, findings, issues))
        if data.augment is not None:  # the augmentation gallery: training images beside augmented copies
            from methodo.data.augment import gallery

            gallery(ds, data.indices["train"], cfg.data.augment, seed=cfg.seed, path=rd.figure("augmentation.png"))
    if cfg.explain.enabled:
        with clock("explain"):
            record.explain = explain(prep, preds["test"], rd)


def explain(prep: Prepared, test_scores, rd: RunDir) -> dict:
    """The report's explanations: attributions for test images, or feature importance for tables."""
    from methodo.explain.report import image_gallery, tabular_importance

    cfg, ds, data, spec = prep.cfg, prep.ds, prep.data, prep.spec
    if spec.explain is not None:
        return {"skipped": spec.explain}
    X, y = data.tensors["test"]
    if ds.kind == "image":
        if not spec.has_classes:
            return {"skipped": "image attributions are drawn for classification only"}
        pre = data.preprocessor
        return image_gallery(prep.model, X, test_scores, data.raw_y["test"], ds.class_names, cfg.explain.methods,
                             cfg.explain.n_images, rd.figure("explanations.png"), seed=cfg.seed,
                             mean=None if pre.mean is None else pre.mean.ravel(),
                             std=None if pre.std is None else pre.std.ravel(), progress=cfg.train.progress)
    return tabular_importance(prep.model, X, y, ds.task, ds.feature_names, rd.figure("feature_importance.png"),
                              repeats=cfg.explain.permutation_repeats, seed=cfg.seed, max_rows=cfg.explain.max_rows,
                              progress=cfg.train.progress)


# --------------------------------------------------------------------------- 8. close


def close(rd: RunDir, record: RunRecord, tracker, *, clock: Clock, status: str, mlflow_status: str) -> None:
    """Write the final summary and report, and end the tracking run (even when the disk refuses the summary).

    The report (and MLflow's copy of the summary) show the timings up to the report; the summary is
    written once more at the end with ``report``, ``tracking`` and the final ``total``.
    """
    from methodo.report.html import render_report

    record.status = status
    record.duration_s = round(time.perf_counter() - clock.start, 3)
    try:
        with clock("report"):
            record.timings = clock.timings()
            rd.write_record(record)
            render_report(rd.path)
    finally:
        with clock("tracking"):
            tracker.finish(mlflow_status, rd)
    record.timings = clock.timings()
    rd.write_record(record)


def fail(rd: RunDir, record: RunRecord, tracker, exc: BaseException, *, clock: Clock) -> None:
    """Close a run that raised: status failed, the reason (and the divergence finding) in the record."""
    from methodo.errors import Terminated

    if isinstance(exc, Diverged):
        record.findings = [FindingRecord.model_validate(exc.finding.to_dict())]
        record.failure = exc.failure
    else:
        record.failure = f"{type(exc).__name__}: {exc}"
    killed = isinstance(exc, (KeyboardInterrupt, Terminated))
    with contextlib.suppress(Exception):  # the original error matters more than a failed report
        close(rd, record, tracker, clock=clock, status="failed", mlflow_status="KILLED" if killed else "FAILED")
