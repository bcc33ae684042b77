"""The stages of a run, each a function with explicit inputs and outputs (``pipeline.run`` calls them in order).

A stage reads what it needs from its arguments and returns what it made; the run record
(:class:`~methodo.record.RunRecord`) is the one object several stages fill, field by field. Stages that
write go through the :class:`~methodo.rundir.RunDir`. Everything that can be wrong with the user's input
is checked by the stages before :func:`open_run` (config, data, model, checkpoint to resume), so a bad
input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    plan: Any = None  # methodo.transfer.Plan: pretrained weights and transfer strategy (None: neither)
    distill: Any = None  # distill.teacher checked against the data (methodo.transfer.distill.check), or None

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
    if cfg.task is not None and cfg.task != ds.task and ds.task in task_spec(cfg.task).data_tasks:
        ds = dataclasses.replace(ds, task=cfg.task)  # e.g. classification images for generation
    if cfg.task is not None and cfg.task != ds.task:
        raise ConfigError(f"task: dataset {ds.name!r} is a {ds.task} dataset (got task: {cfg.task}); "
                          f"use task: {ds.task} or omit it")
    cfg = cfg.model_copy(update={"task": ds.task})
    default_split = task_spec(ds.task).default_split  # forecasting: `time` unless the config names a split
    if default_split and "method" not in cfg.data.split.model_fields_set:
        split = cfg.data.split.model_copy(update={"method": default_split})
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"split": split})})
    if cfg.train.early_stopping and cfg.train.early_stopping.monitor not in epoch_metric_names(ds.task):
        raise ConfigError(f"train.early_stopping.monitor: {cfg.train.early_stopping.monitor!r} is not an "
                          f"epoch metric of this task; choose one of {epoch_metric_names(ds.task)}")
    # A pretrained backbone brings its input normalization (and an hf: model its tokenizer).
    ds, norm = transfer_inputs(cfg, ds)
    with clock("prepare"):
        data = prepare_data(ds, cfg.data, cfg.seed, normalization=norm[:2] if norm else None)
    n_fit = len(data.tensors["train"][1])
    if cfg.train.batch_size > n_fit and n_fit != len(data.indices["train"]):
        raise DataError(f"train.batch_size={cfg.train.batch_size} is larger than the training split after "
                        f"data.balance={cfg.data.balance} ({n_fit} rows); use at most {n_fit}")
    check_batch_size(cfg.train.batch_size, n_fit)
    from methodo.train.distributed import check_batch

    check_batch(cfg.train.batch_size, world_size())
    check_metric_names(ds.task, cfg.evaluate.metrics)
    resolve_device(cfg.train.device)  # `cuda` without a GPU is bad input, found before anything is written
    spec = task_spec(ds.task)
    if cfg.evaluate.label_issues == "cross_val":
        check_cross_val(cfg, ds, spec)
    check_trust(cfg, ds)

    # 2. Model, sized from the data (after feature steps).
    with clock("prepare"):
        model = build_model(cfg.model.name, input_shape=data.input_shape, n_outputs=data.n_outputs,
                            kind=ds.kind, task=ds.task, **cfg.model.options)
        model, plan = transfer_setup(cfg, model, ds, data, norm)
    distill = None
    if cfg.distill.teacher is not None:
        from methodo.transfer.distill import check as check_teacher

        distill = check_teacher(cfg, ds, data)
    return Prepared(cfg, ds, data, model, spec, plan, distill)


def uses_transfer(cfg: Config) -> bool:
    """A run that reuses weights or trains with a transfer strategy (its summary gets a ``transfer`` section)."""
    return (cfg.model.pretrained is not None or cfg.transfer.strategy != "none" or cfg.model.name.startswith("hf:")
            or cfg.transfer.compare_scratch or cfg.distill.teacher is not None)


def transfer_inputs(cfg: Config, ds):
    """``(ds, normalization)``: raw text tokenized by an ``hf:`` model's tokenizer; for images, the
    pretrained backbone's ``(mean, std, expects)`` (None when the scaling is fitted on train)."""
    from methodo.models.backbones import pretrained_normalization

    if ds.kind == "text" and ds.X.dtype == object:
        ds = tokenize_dataset(cfg, ds)
    if ds.kind != "image":
        return ds, None
    return ds, pretrained_normalization(cfg.model.name, cfg.model.pretrained, ds.X.shape[1])


def tokenize_dataset(cfg: Config, ds):
    """Texts → ``(n, 2, max_length)`` token ids and attention masks, by the ``hf:`` model's own tokenizer or
    the one a registered text model names (``tokenizer=`` on its registry entry, e.g. ``text_rnn``)."""
    import dataclasses
    import inspect

    from methodo.models import MODELS
    from methodo.models.backbones import resolve_hf, tokenize

    name = cfg.model.name
    ref = name.partition(":")[2] if name.startswith("hf:") else MODELS.entry(name).meta.get("tokenizer")
    if ref is None:
        fits = [e.name for e in MODELS.entries() if e.meta.get("tokenizer")]
        raise ConfigError(f"model.name: dataset {ds.name!r} holds raw text, which needs a tokenizer: use a text "
                          f"model ({', '.join(fits)}) or an hf: model, e.g. "
                          "model.name=hf:sentence-transformers/all-MiniLM-L6-v2")
    max_length = cfg.model.options.get("max_length",
                                       inspect.signature(MODELS.get(name)).parameters["max_length"].default)
    folder = resolve_hf(ref)
    X = tokenize(ds.X.ravel(), folder, max_length)
    extra = {k: (tokenize(Xe.ravel(), folder, max_length), ye) for k, (Xe, ye) in ds.extra.items()}
    return dataclasses.replace(ds, X=X, extra=extra, meta={**ds.meta, "text": ds.X.ravel()})


def transfer_setup(cfg: Config, model, ds, data, norm):
    """The pretrained weights and the transfer strategy (:func:`methodo.transfer.setup`); ``(model, None)``
    for a run that uses neither."""
    if not uses_transfer(cfg):
        return model, None
    import numpy as np

    from methodo.transfer import setup

    model, plan = setup(cfg, model, classes=ds.class_names)
    if norm is not None:  # what the backbone expects beside what the data is (domain_mismatch)
        X = ds.X[data.indices["train"]]
        plan.info["expects"] = norm[2]
        plan.info["data"] = {"channels": int(X.shape[1]), "size": [int(X.shape[2]), int(X.shape[3])],
                             "mean": [round(float(v), 6) for v in X.mean(axis=(0, 2, 3))],
                             "std": [round(float(v), 6) for v in X.std(axis=(0, 2, 3))]}
    return model, plan


def check_trust(cfg: Config, ds) -> None:
    """Fairness needs groups and classes; robustness and adversarial training need image classification."""
    if ds.sensitive and ds.task != "classification":
        raise ConfigError(f"data.sensitive: per-group metrics are computed for classification; dataset {ds.name!r} "
                          f"is a {ds.task} dataset")
    if cfg.fairness.mitigation and not ds.sensitive:
        raise ConfigError(f"fairness.mitigation: {cfg.fairness.mitigation} needs groups to be fair to: name the "
                          "sensitive columns in data.sensitive")
    tabular_only = [m for m in cfg.fairness.mitigation if m in ("exponentiated_gradient", "penalty")]
    if tabular_only and ds.kind != "tabular":
        raise ConfigError(f"fairness.mitigation: {tabular_only[0]} works on tables; dataset {ds.name!r} holds {ds.kind}")
    for key, on in (("evaluate.robustness", cfg.evaluate.robustness is not None),
                    ("train.adversarial", cfg.train.adversarial is not None)):
        if on and not (ds.kind == "image" and ds.task == "classification"):
            raise ConfigError(f"{key}: adversarial attacks and corruptions work on image classification; dataset "
                              f"{ds.name!r} is {ds.kind} {ds.task}; set {key}=null")
    if cfg.evaluate.robustness is not None or cfg.train.adversarial is not None:
        from methodo.trust.robustness import check_torchattacks

        check_torchattacks(key="train.adversarial" if cfg.train.adversarial is not None else "evaluate.robustness")


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
            groups = prep.plan.param_groups(oc.lr) if prep.plan is not None else None
            opt = build_optimizer(groups or prep.model.parameters(), oc.name, oc.lr, oc.options,
                                  hypergradient=oc.hypergradient.beta if oc.hypergradient else None)
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
    from methodo.train.checkpoint import misfit

    bad = misfit(weights, own)
    if bad is None:
        return
    kind, what = bad
    if kind == "extra":
        raise BadInput(f"{path}: has weights the model does not ({what}); resume with the config the run "
                       "started with")
    raise BadInput(f"{path}: does not fit the model of {rd.file(LAYOUT['config'])} ({what}); resume with the "
                   "config the run started with")
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
    import dataclasses

    return dataclasses.replace(prep, cfg=cfg.model_copy(update={"train": tcfg})), found, keys


def audit(prep: Prepared) -> list:
    """Data findings (leakage, duplicates across splits, imbalance, ...) on the split data."""
    from methodo.data.audit import AuditFacts, audit as audit_data

    return audit_data(AuditFacts.from_dataset(prep.ds, prep.data.indices), max_queries=2000,
                      progress=prep.cfg.train.progress)


# --------------------------------------------------------------------------- 3. the run dir


# the packages whose versions can change a run's numbers (read from installed metadata: nothing imported)
_VERSIONED = ("torchvision", "numpy", "scikit-learn", "torchmetrics", "pandas", "pyarrow", "scipy")


def versions() -> dict[str, str]:
    """What a re-run must match to give the same numbers bit for bit: methodo, torch and the numeric
    packages, Python, the platform and the CPU threads torch uses (they fix the order of reductions)."""
    from importlib import metadata

    import torch

    from methodo import __version__

    out = {"methodo": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["platform"] = f"{platform.system()}-{platform.machine()}"
    out["torch_threads"] = str(torch.get_num_threads())
    return out


def git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def world_size() -> int:
    """Processes in the job (torchrun's ``WORLD_SIZE``; 1 without it)."""
    from methodo.train.distributed import world_size as ws

    return ws()


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
        augment=cfg.data.augment or None, count_unit=spec.count_unit, digest=ds.digest(),
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
             lr_keys: list[str] = (), dist=None) -> tuple[RunDir, RunRecord]:
    """Create (or reopen) the run dir, write the run's inputs, and start tracking.

    Writes ``config.yaml`` (resolved), ``preprocessor.json``, ``features.skops`` (tables with feature
    steps), the LR finder's result, and a first ``summary.json`` with status ``running``. Under DDP
    (``dist``, rank 0 only) the record says how the work is split (``distributed``).
    """
    from methodo.data.features import save_pipeline

    cfg, data = prep.cfg, prep.data
    rd = resume_rd if resume_rd is not None else RunDir.create(out, name=cfg.name)
    rd.make_layout()
    record = new_record(prep, resumed=resumed)
    if dist is not None:
        record.distributed = distributed_info(cfg, dist)
    rd.write_text(LAYOUT["config"], dump_yaml(cfg))
    rd.write_text(LAYOUT["preprocessor"], data.preprocessor.to_json())
    write_use_files(rd, prep)
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
    tags = {"methodo.run_dir": str(rd.path.resolve()), "methodo.run_name": rd.path.name,
            "methodo.dataset": prep.ds.name, "methodo.world_size": str(record.world_size)}
    if record.distributed is not None:
        d = record.distributed
        params.update({"per_rank_batch": d.per_rank_batch, "lr_factor": d.lr_factor})
        tags["methodo.backend"] = d.backend
    tracker.start(params, tags)
    record.mlflow_run_id = tracker.run_id
    rd.write_record(record)
    return rd, record


def write_use_files(rd: RunDir, prep: Prepared) -> None:
    """What using the model later needs: ``inputs.json`` (its inputs and outputs, for ``methodo predict``
    and ``methodo.load``) and ``drift.json`` (statistics of the training split, for the drift checks of
    ``methodo evaluate``)."""
    from methodo.use.drift import reference_stats
    from methodo.use.schema import schema_for_run

    rd.write_text(LAYOUT["inputs"], schema_for_run(prep).to_json())
    rd.write_json(LAYOUT["drift"], reference_stats(prep.ds, prep.data.indices["train"], seed=prep.cfg.seed))


def distributed_info(cfg: Config, dist):
    """``summary.json`` → ``distributed``: world size, backend, global and per-rank batch, LR scaling."""
    from methodo.record import DistributedInfo
    from methodo.train.distributed import lr_factor, restart_count

    tc = cfg.train
    factor = lr_factor(tc.lr_scaling, batch_size=tc.batch_size, world=dist.world, base_batch=tc.lr_base_batch)
    lr = tc.optimizer.lr * factor if isinstance(tc.optimizer.lr, (int, float)) else None
    return DistributedInfo(world_size=dist.world, backend=dist.backend, global_batch=tc.batch_size,
                           per_rank_batch=tc.batch_size // dist.world, lr_scaling=tc.lr_scaling,
                           lr_factor=factor, lr=lr, restarts=restart_count())


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


def transfer_seams(prep: Prepared, next_epoch: int = 1):
    """What the training loop takes from the transfer strategy (``prep.plan``), as :func:`train` gives it:
    ``(model, data, param_groups, plan_on_epoch)`` — the plan's parameter groups, its unfreezing applied for
    epoch ``next_epoch``, its per-epoch hook, and for a linear probe with ``transfer.cache_features`` the head
    and the frozen backbone's cached features in place of the model and data. Without a plan: the model and data
    as they are, ``None``, ``None``."""
    cfg, plan = prep.cfg, prep.plan
    if plan is None:
        return prep.model, prep.data, None, None
    groups = plan.param_groups(cfg.train.optimizer.lr)
    if plan.at_epoch is not None:
        plan.at_epoch(next_epoch)
    model, data = prep.model, prep.data
    if plan.strategy == "linear_probe" and cfg.transfer.cache_features:
        from methodo.transfer.cache import cached_probe  # the frozen backbone once, the head on its features

        model, data, plan.info["cached_features"] = cached_probe(model, data, cfg.train)
    return model, data, groups, plan.on_epoch


def train(prep: Prepared, rd: RunDir, record: RunRecord, tracker, *, resume_from: Path | None, dist=None,
          teacher=None):
    """Train (the best weights by the monitor end up in the model); fills the training fields of the record.
    With a ``teacher`` (:func:`build_teacher`) the loss adds its cached soft targets (the loop's ``extra_loss``).

    Raises :class:`Diverged` (a :class:`RunFailed`) with the explaining finding when the loss goes
    non-finite or explodes. Under DDP (``dist``) every rank trains; rank 0 alone writes (checkpoints,
    ``metrics.csv``, ``steps.csv``, tracking).
    """
    import numpy as np

    from methodo import diagnose as dg, signals
    from methodo.train.checkpoint import load_checkpoint
    from methodo.train.loop import NonFiniteLoss, fit

    cfg, plan = prep.cfg, prep.plan
    history = list(load_checkpoint(resume_from / "last.safetensors")[1]["history"]) if resume_from else []
    log = EpochLog(rd, tracker, history)  # metrics.csv keeps the epochs run before an interruption
    main = dist is None or dist.main
    on_epoch = log if main else None
    if plan is not None and resume_from is None:
        probe = probe_pretrained(prep)
        if probe is not None:
            plan.info["probe"] = probe
    model, data, groups, plan_hook = transfer_seams(prep, len(history) + 1)
    if plan_hook is not None:
        on_epoch = lambda row: plan_hook(row) or (log(row) if main else None)  # noqa: E731
    if main and prep.spec.on_epoch is not None:  # the task's own per-epoch outputs (generation: sample grids)
        task_hook, then = prep.spec.on_epoch(prep, rd), on_epoch
        on_epoch = lambda row: task_hook(row) or (then(row) if then is not None else None)  # noqa: E731
    try:
        res = fit(model, data, cfg.train, seed=cfg.seed, ckpt_dir=rd.checkpoints if main else None,
                  class_weights=prep.class_weights, on_epoch=on_epoch, resume_from=resume_from,
                  param_groups=groups, dist=dist, extra_loss=extra_losses(prep, teacher))
    except NonFiniteLoss as exc:
        lr = cfg.train.optimizer.lr
        record.epochs_run = len(log.history)
        finding = dg.non_finite_loss(exc.epoch, exc.step, exc.value, lr, exc.limit, tensor=exc.tensor)
        raise Diverged(f"training stopped: {exc} (lr={lr}); run dir {rd.path}", finding=finding,
                       failure=str(exc)) from None
    signals.check()
    if not main:
        return res
    write_metrics_csv(rd, res.history)
    write_steps_csv(rd, res, len(prep.data.indices["train"]), cfg.train, record.world_size)
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
    if plan is not None:
        record.transfer = transfer_summary(plan, res)
        if plan.adapter is not None:  # lora: the adapter alone, beside the full checkpoints (for resume)
            from methodo.transfer.lora import save_adapter

            record.transfer.adapter = save_adapter(prep.model, rd)
    return res


def probe_pretrained(prep: Prepared, max_rows: int = 2000) -> dict | None:
    """How good the pretrained features are before fine-tuning: a logistic regression on the penultimate
    features of (at most ``max_rows``) training rows, scored on val (the ``catastrophic_forgetting`` check's
    reference). Classification runs that fine-tune pretrained weights only; deterministic, no RNG drawn."""
    plan, cfg = prep.plan, prep.cfg
    if (plan.pretrained is None or cfg.transfer.strategy not in ("finetune", "gradual_unfreeze", "none")
            or not prep.spec.has_classes or prep.data.raw_y["train"].ndim != 1):
        return None
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from methodo.evaluate.embeddings import penultimate

    data = prep.data
    Xtr, ytr = data.inputs("train")[:max_rows], data.raw_y["train"][:max_rows]
    if len(np.unique(ytr)) < 2:
        return None
    Etr = penultimate(prep.model, Xtr, batch_size=cfg.train.eval_batch_size)[0]
    Eva = penultimate(prep.model, data.inputs("val"), batch_size=cfg.train.eval_batch_size)[0]
    sc = StandardScaler().fit(Etr)
    clf = LogisticRegression(max_iter=300).fit(sc.transform(Etr), ytr)
    return {"val": round(float(clf.score(sc.transform(Eva), data.raw_y["val"])), 6),
            "train": round(float(clf.score(sc.transform(Etr), ytr)), 6), "rows": int(len(ytr)),
            "model": "logistic regression on the pretrained penultimate features"}


def train_scratch(prep: Prepared):
    """The run's model built again from random weights and trained with the same data, epochs and optimizer
    (one parameter group, no strategy, no teacher), the global RNG states restored after so the run's own
    later stages do not move. Returns ``(model, TrainResult, seconds, test scores)``."""
    import random
    import time as _time

    import numpy as np
    import torch

    from methodo.evaluate import predict
    from methodo.models import build_model
    from methodo.seed import seed_everything
    from methodo.train.loop import fit

    cfg = prep.cfg
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        seed_everything(cfg.seed)
        data = prep.data
        model = build_model(cfg.model.name, input_shape=data.input_shape, n_outputs=data.n_outputs,
                            kind=prep.ds.kind, task=prep.ds.task, **cfg.model.options)
        t0 = _time.perf_counter()
        res = fit(model, data, cfg.train, seed=cfg.seed, class_weights=prep.class_weights)
        seconds = _time.perf_counter() - t0
        p = predict(model, data.inputs("test"), task=prep.ds.task, batch_size=cfg.train.eval_batch_size,
                    inverse_y=data.preprocessor.inverse_y,
                    y=data.tensors["test"][1] if prep.spec.scores_need_targets else None)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
    return model, res, seconds, p


def _scratch_info(prep: Prepared, model, res, seconds: float, scores) -> dict:
    """``transfer.scratch``: test metrics (the headline one with its bootstrap interval), epochs, parameters,
    seconds per epoch."""
    from methodo.evaluate import compute_metrics
    from methodo.evaluate.bootstrap import percentile_intervals

    task, y, ecfg = prep.ds.task, prep.data.raw_y["test"], prep.cfg.evaluate
    scores = prep.spec.metric_input(scores)
    metrics = compute_metrics(task, scores, y, prep.n_classes)
    head = prep.spec.headline[0]
    intervals = percentile_intervals(task, scores, y, prep.n_classes, names=[head], n_boot=ecfg.bootstrap,
                                     seed=prep.cfg.seed, level=ecfg.confidence, budget=ecfg.bootstrap_budget)[0] \
        if ecfg.bootstrap and metrics.get(head) is not None else {}
    return {"metrics": {k: (None if v is None else float(v)) for k, v in metrics.items()}, "intervals": intervals,
            "epochs_run": res.epochs_run, "best_epoch": res.best_epoch,
            "parameters": int(sum(q.numel() for q in model.parameters())),
            "epoch_time_s": round(seconds / max(res.epochs_run, 1), 4)}


def compare_scratch(prep: Prepared, record: RunRecord) -> None:
    """``transfer.compare_scratch``: the same model from random weights, trained with the same data, epochs
    and optimizer (:func:`train_scratch`); its test metrics, parameters and time per epoch go to
    ``transfer.scratch``. A distillation run trains its scratch student in :func:`compare_distill` instead."""
    cfg, plan = prep.cfg, prep.plan
    if plan is None or not cfg.transfer.compare_scratch or record.transfer is None or cfg.distill.teacher is not None:
        return
    record.transfer.scratch = _scratch_info(prep, *train_scratch(prep))


# --------------------------------------------------------------------------- distillation


def build_teacher(prep: Prepared):
    """``distill.teacher``: the teacher ready, its soft targets over the training rows computed once
    (:func:`methodo.transfer.distill.build`); None without distillation."""
    if prep.distill is None:
        return None
    from methodo.transfer import distill

    return distill.build(prep.cfg, prep.ds, prep.data, prep.distill, class_weights=prep.class_weights,
                         progress=prep.cfg.train.progress)


def compare_distill(prep: Prepared, teacher, record: RunRecord, preds: dict) -> None:
    """Teacher, distilled student (this run) and the same student trained from scratch with the same budget,
    side by side on the test split: metrics with intervals, parameters, inference time per sample, and
    whether the student beat scratch (paired bootstrap of the difference). Fills ``transfer.distill`` and
    ``transfer.scratch``."""
    if teacher is None or record.transfer is None:
        return
    import torch

    from methodo.transfer.distill import inference_time, side_by_side

    cfg, data, spec = prep.cfg, prep.data, prep.spec
    scratch_model, res, seconds, scratch_scores = train_scratch(prep)
    record.transfer.scratch = _scratch_info(prep, scratch_model, res, seconds, scratch_scores)
    X = data.inputs("test")
    bs = cfg.train.eval_batch_size
    teacher_scores = torch.softmax(teacher.logits(X, batch_size=bs), dim=1).numpy()
    metric = spec.headline[0]
    names = list(dict.fromkeys([metric, "accuracy", "balanced_accuracy"]))
    ecfg = cfg.evaluate
    table = side_by_side(prep.ds.task, data.raw_y["test"],
                         {"teacher": teacher_scores, "student": preds["test"], "scratch": scratch_scores},
                         n_classes=prep.n_classes, metric=metric, names=names, n_boot=ecfg.bootstrap, seed=cfg.seed,
                         level=ecfg.confidence)
    models = table["models"]
    n_params = lambda m: int(sum(q.numel() for q in m.parameters()))  # noqa: E731
    models["teacher"].update(teacher.info)
    models["teacher"].update(source=teacher.source, seconds_per_sample=inference_time(
        teacher.model, X, batch_size=bs, to_input=teacher.to_teacher))
    models["student"].update(parameters=n_params(prep.model),
                             seconds_per_sample=inference_time(prep.model, X, batch_size=bs))
    models["scratch"].update(parameters=n_params(scratch_model), epochs_run=res.epochs_run,
                             seconds_per_sample=inference_time(scratch_model, X, batch_size=bs))
    iv, diff = table["interval"], table["difference"]
    beats = bool(iv is not None and iv[0] > 0) if iv is not None else (diff is not None and diff > 0)
    if diff is None:
        verdict = f"no {metric} to compare"
    elif beats:
        verdict = (f"the distilled student beat the scratch student: test {metric} "
                   f"{models['student']['metrics'][metric]:.4g} vs {models['scratch']['metrics'][metric]:.4g}")
    else:
        verdict = (f"the distilled student did not beat the scratch student beyond chance: test {metric} "
                   f"{models['student']['metrics'][metric]:.4g} vs {models['scratch']['metrics'][metric]:.4g}")
    record.transfer.distill = {
        "temperature": cfg.distill.temperature, "alpha": cfg.distill.alpha,
        "metric": metric, "level": ecfg.confidence, **models,
        "difference": None if diff is None else round(diff, 6), "difference_interval": iv,
        "beats_scratch": beats, "verdict": verdict}


def transfer_summary(plan, res) -> dict:
    """``summary.json`` → ``transfer``: strategy, parameters trained of all, seconds per epoch, what the
    pretrained weights were and what the backbone expects of its inputs."""
    times = [r["time_s"] for r in res.history if "time_s" in r]
    out = dict(plan.info)
    if plan.pretrained is not None:
        out["pretrained"] = plan.pretrained
    out["epoch_time_s"] = round(sum(times) / len(times), 4) if times else None
    return out


def extra_loss(prep: Prepared):
    """The loop's extra-loss term the config asks for: adversarial examples (``train.adversarial``), or None."""
    acfg = prep.cfg.train.adversarial
    if acfg is None:
        return None
    from methodo.trust.adversarial import adversarial_loss

    pre = prep.data.preprocessor
    return adversarial_loss(acfg, mean=None if pre.mean is None else pre.mean.ravel(),
                            std=None if pre.std is None else pre.std.ravel())


def extra_losses(prep: Prepared, teacher=None):
    """The loop's extra-loss term: adversarial examples (``train.adversarial``), the teacher's soft targets
    (``distill``), their sum when both are on, or None."""
    adv = extra_loss(prep)
    soft = None if teacher is None else teacher.loss(prep.cfg, prep.class_weights)
    if adv is None or soft is None:
        return adv if soft is None else soft

    def both(model, out, xb, yb, rows):  # `rows`: the batch's row indices, which the soft targets need
        return adv(model, out, xb, yb) + soft(model, out, xb, yb, rows)

    return both


def write_steps_csv(rd: RunDir, res, n_train: int, tcfg, world: int = 1) -> None:
    """One row per optimizer step: epoch, LR, data loss and (when computed) the pre-clip gradient norm."""
    from methodo.train.loop import batches_per_epoch

    per_epoch = math.ceil(batches_per_epoch(n_train, tcfg.batch_size, world) / tcfg.accumulate)
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


def fairness(prep: Prepared, preds: dict, record: RunRecord, tracker, clock: Clock | None = None) -> None:
    """``data.sensitive``: per-group metrics of every split with intervals, disparities, proxies and label bias
    (timed as ``fairness``), and the mitigations of ``fairness.mitigation`` side by side (``mitigation``).
    Nothing when the dataset has no sensitive attribute."""
    if not prep.ds.sensitive:
        return
    from methodo.trust.fairness import evaluate_fairness, tracked_metrics

    cfg, clock = prep.cfg, clock or Clock()
    with clock("fairness"):
        record.fairness = evaluate_fairness(prep, preds, seed=cfg.seed, n_boot=cfg.evaluate.bootstrap,
                                            level=cfg.evaluate.confidence, fcfg=cfg.fairness)
    if cfg.fairness.mitigation:
        from methodo.trust.mitigate import mitigate

        with clock("mitigation"):
            record.fairness = {**record.fairness, "mitigation": mitigate(prep, preds, record.fairness)}
    tracker.log_metrics(tracked_metrics(record.fairness))


def robustness(prep: Prepared, rd: RunDir, record: RunRecord, tracker, clock: Clock | None = None) -> None:
    """``evaluate.robustness``: accuracy under attack and corruption of the trained model on the test split
    (timed as ``robustness``); with ``train.adversarial`` also of the same config trained without it (before /
    after). Nothing when ``evaluate.robustness`` is null."""
    rcfg = prep.cfg.evaluate.robustness
    if rcfg is None:
        return
    from methodo.trust.robustness import run_robustness, tracked_metrics

    with (clock or Clock())("robustness"):
        record.robustness = run_robustness(prep, rcfg, rd=rd)
    tracker.log_metrics(tracked_metrics(record.robustness))


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


SUSPECT_COLUMNS = 12  # feature values shown beside each suspected label error (report and summary.json)


def attach_inputs(suspects: list[dict], ds) -> None:
    """Add each suspect row's ``inputs`` (its first :data:`SUSPECT_COLUMNS` feature values, then categorical
    values, as read; ``None`` for a missing value) for the report's label-issue table."""
    import math

    names = list(ds.feature_names)[:SUSPECT_COLUMNS]
    cats = list(ds.cat_names)[:max(SUSPECT_COLUMNS - len(names), 0)] if ds.cat is not None else []
    for s in suspects:
        x = ds.X[s["row"]]
        vals = {n: (None if not math.isfinite(float(v)) else round(float(v), 6)) for n, v in zip(names, x)}
        vals.update({n: (None if v is None else str(v)) for n, v in zip(cats, ds.cat[s["row"]])} if cats else {})
        s["inputs"] = vals


def val_loss_se(prep: Prepared, preds: dict) -> float | None:
    """The standard error of the mean validation loss (cross-entropy per row, at the kept weights): what a
    rise of the validation loss is compared with. None for tasks other than single-label classification."""
    import numpy as np

    if prep.spec.label_issues != "multiclass" or "val" not in preds:
        return None
    p, y = np.asarray(preds["val"], dtype=np.float64), np.asarray(prep.data.raw_y["val"]).astype(np.int64)
    if p.ndim != 2 or len(y) < 2:
        return None
    loss = -np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))
    return float(loss.std(ddof=1) / np.sqrt(len(y)))


def diagnose(prep: Prepared, res, preds: dict, record: RunRecord, history: list[dict], data_findings: list,
             issues=None) -> list:
    """The run's findings, most severe first: the data audit's and the checks on curves and predictions.
    Label errors come from ``issues`` (:func:`label_issues`: rows the models never trained on)."""
    import numpy as np

    from methodo import diagnose as dg
    from methodo.record import DiagnosisInfo

    data, spec = prep.data, prep.spec
    se = val_loss_se(prep, preds)
    record.diagnosis = DiagnosisInfo(val_loss_se=se)  # kept so that `methodo diagnose` recomputes overfitting
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
        reference=record.reference.model_dump() if record.reference else None,
        transfer=record.transfer.model_dump() if record.transfer else None,
        n_rows={s: int(len(ix)) for s, ix in data.indices.items()}, val_loss_se=se)
    from methodo.trust.findings import trust_findings

    trust = trust_findings(record.fairness, record.robustness)
    findings = sorted(data_findings + dg.diagnose(facts) + trust, key=lambda x: dg.SEVERITY_ORDER.get(x.severity, 9))
    for f in findings:  # the report shows the suspects with their rows: a table's feature values
        if f.id == "label_errors" and prep.ds.kind == "tabular":
            attach_inputs(f.evidence["top"], prep.ds)
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


def write_label_scores(rd: RunDir, issues, class_names: list[str] | None) -> None:
    """``label_scores.csv``: what the label-issue search read (each searched row, its split, its out-of-sample
    scores at full precision), so ``methodo diagnose`` repeats the search to the bit."""
    from methodo import csvtext
    from methodo.evaluate.label_issues import scores_columns, scores_header

    if issues.searched is None:
        return
    proba = issues.searched[0]
    names = class_names or [str(k) for k in range(proba.shape[1])]
    rd.write_bytes(LAYOUT["label_scores"], csvtext.join(scores_header(names), scores_columns(issues)))


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
            write_label_scores(rd, issues, ds.class_names)
        plots.learning_curves(res.history, res.lrs, rd.figure("learning_curves.png"), best_epoch=res.best_epoch,
                              grad_norms=res.grad_norms, clip=cfg.train.clip.norm)
        if res.monitor:
            plots.weight_distributions(res.monitor, rd.figure("weights.png"))
        if spec.write_outputs is not None:
            spec.write_outputs(Outputs(rd, record, cfg, ds, data, prep.model, preds, findings, issues))
        if record.fairness:
            from methodo.trust.report import fairness_figure

            fairness_figure(record.fairness, rd.figure("fairness.png"))
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
    if ds.kind == "text" and spec.has_classes:
        if not hasattr(prep.model, "attention"):
            return {"skipped": f"text explanations are the attention maps of models that record them "
                               f"(text_transformer); {cfg.model.name} does not"}
        from methodo.explain.report import attention_strips
        from methodo.models import MODELS

        name = cfg.model.name
        tok = name.partition(":")[2] if name.startswith("hf:") else MODELS.entry(name).meta.get("tokenizer")
        texts = ds.meta.get("text")
        return attention_strips(prep.model, X, test_scores, data.raw_y["test"], ds.class_names,
                                None if texts is None else texts[data.indices["test"]], cfg.explain.n_images,
                                rd.figure("attention.png"), tokenizer=tok)
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
            write_card(rd, record)
    finally:
        with clock("tracking"):
            tracker.finish(mlflow_status, rd)
    record.timings = clock.timings()
    rd.write_record(record)


def log_model(prep: Prepared, rd: RunDir, record: RunRecord, tracker) -> None:
    """The trained model and its training data to MLflow (``runs:/ID/model``, a pyfunc with the
    preprocessing; registered as ``track.register``). A store that refuses it is a warning: the run dir
    holds the model either way."""
    try:
        tracker.log_model(prep, rd, register=prep.cfg.track.register)
    except Exception as exc:  # noqa: BLE001 - tracking must not lose a finished run
        print(f"warning: the model could not be logged to MLflow ({type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:300]}); the run dir holds it", file=sys.stderr)


def write_card(rd: RunDir, record: RunRecord) -> None:
    """``MODEL_CARD.md`` (Hugging Face layout) from the record, the resolved config and the input schema."""
    from methodo.use.card import model_card

    config = rd.read_text(LAYOUT["config"]) if rd.has(LAYOUT["config"]) else ""
    inputs = rd.read_json(LAYOUT["inputs"]) if rd.has(LAYOUT["inputs"]) else None
    rd.write_text(LAYOUT["card"], model_card(record, config, inputs=inputs))


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
