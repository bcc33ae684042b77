"""Knowledge distillation: a student learns from a teacher's soft targets beside the labels.

``distill.teacher`` is a methodo run dir (its best weights; LoRA runs with their adapter) or a model
spec trained first on the run's own training split. The teacher's class probabilities at temperature
``T`` are computed **once**, over the training tensor the loop draws its batches from (after any
resampling, before any augmentation), and cached in memory, one row per training row. The loop's
``extra_loss`` seam receives the batch's row indices (``rows``), so the batch's targets are
``targets[rows]`` whatever the shuffling or sampling did (:class:`DistillLoss`).

The training loss is Hinton et al.'s mix::

    (1 − alpha) · CE(student, labels) + alpha · T² · KL(teacher_T ‖ student_T)

written as the loop's data loss plus ``alpha · (T² · KL − CE)`` (the logged ``train_loss`` stays the
hard-label loss; the hard part is the task's cross-entropy with the run's class weights).

A teacher run dir sees the student's inputs through its own scaling: the student's tensors are
mapped back through the student's per-feature/channel scaling and forward through the teacher's
(``preprocessor.json``), both affine, so a teacher trained with another normalization (a pretrained
backbone's) gets the inputs it was trained on. Classes (names and order) and input shapes must match;
tables with ``data.features`` steps on either side are refused (their fitted pipelines are not
invertible here).

Examples
--------
>>> import torch
>>> from methodo.transfer.distill import DistillLoss
>>> targets = torch.softmax(torch.tensor([[2.0, 0.0], [0.0, 2.0]]) / 2.0, dim=1)
>>> loss = DistillLoss(targets, temperature=2.0, alpha=1.0, hard=lambda out, y: out.sum() * 0)
>>> out = torch.tensor([[2.0, 0.0]], requires_grad=True)
>>> round(float(loss(None, out, None, torch.tensor([0]), torch.tensor([0]))), 6)  # the teacher's own logits
0.0
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from methodo.errors import ConfigError, short


def check_teacher_dir(value: str) -> None:
    """``distill.teacher`` as text names a finished methodo run dir (config time)."""
    from methodo.models.backbones import is_run_dir

    p = Path(value).expanduser()
    if not p.is_dir() or not is_run_dir(p):
        raise ConfigError(f"{short(value)} is not a methodo run dir; give the run dir of a trained teacher, or a "
                          "model spec {name: ..., epochs: ...} trained first on this run's data")
    for need in ("config.yaml", "preprocessor.json", "checkpoints/best.safetensors"):
        if not (p / need).is_file():
            raise ConfigError(f"run dir {short(value)} has no {need} (did the run finish?)")


# --------------------------------------------------------------------------- the loss


class DistillLoss:
    """The loop's ``extra_loss``: ``alpha · (T² · KL(teacher_T ‖ student_T) − hard(out, y))`` for the batch's
    rows, the cached soft targets moved to the output's device on first use."""

    def __init__(self, targets, *, temperature: float, alpha: float, hard: Callable):
        self.targets, self.T, self.alpha, self.hard = targets, float(temperature), float(alpha), hard

    def __call__(self, model, out, xb, yb, rows):
        import torch.nn.functional as F

        if self.targets.device != out.device:
            self.targets = self.targets.to(out.device)
        soft = F.kl_div(F.log_softmax(out.float() / self.T, dim=1), self.targets[rows], reduction="batchmean")
        return self.alpha * (self.T * self.T * soft - self.hard(out, yb))


# --------------------------------------------------------------------------- the teacher


@dataclass
class Teacher:
    """A ready teacher: its model (eval mode), how the student's inputs become its own, and its cached soft
    targets (``(n_train, C)`` probabilities at the temperature)."""

    model: Any
    source: str
    kind: str  # "run" | "model"
    to_teacher: Callable  # student input batch → teacher input batch
    targets: Any = None
    info: dict = field(default_factory=dict)

    def loss(self, cfg, class_weights=None) -> DistillLoss:
        from methodo.train.loop import loss_function

        return DistillLoss(self.targets, temperature=cfg.distill.temperature, alpha=cfg.distill.alpha,
                           hard=loss_function(cfg.task, None if class_weights is None else class_weights))

    def logits(self, X, *, batch_size: int):
        """The teacher's raw outputs over the student's inputs ``X`` (CPU float32)."""
        import torch

        device = next(self.model.parameters()).device
        outs = []
        with torch.no_grad():
            for s in range(0, len(X), batch_size):
                outs.append(self.model(self.to_teacher(X[s:s + batch_size]).to(device)).float().cpu())
        return torch.cat(outs) if outs else torch.zeros(0)


def check(cfg, ds, data) -> dict | None:
    """What the teacher is, checked against the student's data before anything is written (``prepare``):
    distillation needs classes; a teacher run dir needs the same classes, input shape and a mappable input
    scaling. Returns the teacher run's config and scaling (``None`` without distillation)."""
    teacher = cfg.distill.teacher
    if teacher is None:
        return None
    from methodo.tasks import task_spec

    spec = task_spec(ds.task)
    if not spec.has_classes or ds.y.ndim != 1:
        raise ConfigError(f"distill.teacher: distillation learns a teacher's class probabilities; a {ds.task} "
                          "task has none (classification only)")
    if not isinstance(teacher, str):
        return {"kind": "model"}
    from methodo.config import load_config
    from methodo.data.preprocess import Preprocessor
    from methodo.rundir import RunDir

    rd = RunDir.open(teacher, needs="config", flag="distill.teacher")
    tcfg = load_config(rd.file("config.yaml"))
    rec = rd.read_record()
    where = f"distill.teacher: run {short(teacher)}"
    if rec.task != ds.task:
        raise ConfigError(f"{where} is a {rec.task} run; this run is {ds.task}")
    classes = rec.data.classes if rec.data is not None else None
    if classes is not None and list(classes) != list(ds.class_names or []):
        raise ConfigError(f"{where} predicts the classes {short(list(classes))}, this data has "
                          f"{short(list(ds.class_names or []))}; a teacher must predict the student's classes, in order")
    if tcfg.data.features or cfg.data.features:
        raise ConfigError(f"{where}: data.features steps (on the teacher's or this run's table) are not supported "
                          "in distillation; use a teacher and a student without feature steps, or a model spec "
                          "teacher trained on this run's data")
    shape = list(data.input_shape)
    t_shape = list(rec.data.input_shape) if rec.data is not None else None
    if ds.kind == "image" and tcfg.data.image_size is not None and t_shape is not None:
        size = tcfg.data.image_size
        t_shape[-2:] = [size, size] if isinstance(size, int) else list(size)
    if ds.kind == "text":
        if tcfg.model.name != cfg.model.name or tcfg.model.options.get("max_length") != cfg.model.options.get(
                "max_length"):
            raise ConfigError(f"{where} reads text through {tcfg.model.name!r} (max_length "
                              f"{tcfg.model.options.get('max_length')}); a text student must use the same tokenizer "
                              "and max_length")
    elif t_shape is not None and t_shape != shape:
        raise ConfigError(f"{where} takes inputs of shape {t_shape}, this run's are {shape}; give the teacher "
                          "data of the same shape (data.image_size, channels)")
    _check_no_leak(rd, rec, ds, data, where)
    t_pre = Preprocessor.from_json(rd.read_text("preprocessor.json"))
    s_pre = data.preprocessor
    if (t_pre.mean is None) != (s_pre.mean is None):
        raise ConfigError(f"{where} scales its inputs ({t_pre.scale}) where this run does not ({s_pre.scale}), or "
                          "the other way round; use the same data.scale")
    return {"kind": "run", "dir": rd, "config": tcfg, "preprocessor": t_pre}


def _check_no_leak(rd, rec, ds, data, where: str) -> None:
    """A teacher trained (or early-stopped) on this run's test rows would pass them on to the student: on the
    same data (equal digests), its ``splits.csv`` train and val rows must not meet this run's test rows."""
    import numpy as np

    if rec.data is None or rec.data.digest is None or rec.data.digest != ds.digest() or not rd.has("splits.csv"):
        return
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(rd.file("splits.csv"))
    rows = np.asarray(table.column("row").to_numpy(), dtype=np.int64)
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    seen = rows[(split == "train") | (split == "val")]
    leaked = np.intersect1d(seen, np.asarray(data.indices["test"], dtype=np.int64))
    if len(leaked):
        raise ConfigError(f"{where} trained on {len(leaked)} of this run's {len(data.indices['test'])} test rows "
                          f"(row {int(leaked[0])}, ...): what it learned of them would reach the student and "
                          "flatter its test score; use the teacher's data.split and seed")


def _input_map(student_pre, teacher_pre) -> Callable:
    """Student inputs → teacher inputs: undo the student's affine scaling, apply the teacher's."""
    import torch

    if student_pre.mean is None or teacher_pre.mean is None:
        return lambda x: x
    ms, ss = student_pre.mean.reshape(-1), student_pre.std.reshape(-1)
    mt, st = teacher_pre.mean.reshape(-1), teacher_pre.std.reshape(-1)
    if len(ms) != len(mt):
        raise ConfigError(f"distill.teacher: its scaling has {len(mt)} features/channels, this run's {len(ms)}")
    if ((ms == mt).all() and (ss == st).all()):
        return lambda x: x  # the same scaling: the same tensors, bit for bit
    scale = torch.from_numpy((ss / st).astype("float32"))
    shift = torch.from_numpy(((ms - mt) / st).astype("float32"))
    shape = student_pre.mean.shape[1:]
    scale, shift = scale.reshape(shape), shift.reshape(shape)
    return lambda x: x * scale.to(x.device) + shift.to(x.device)


def _make(cfg, ds, data, found: dict, device, *, class_weights, progress: bool, t0: float) -> Teacher:
    """The teacher's model: a run dir's, with its best weights, or the model spec trained on the run's data."""
    if found["kind"] == "run":
        from methodo.transfer import load_run_model

        rd, tcfg = found["dir"], found["config"]
        model = load_run_model(rd, tcfg, input_shape=data.input_shape, n_outputs=data.n_outputs, kind=ds.kind)
        teacher = Teacher(model.to(device).eval(), str(cfg.distill.teacher), "run",
                          _input_map(data.preprocessor, found["preprocessor"]))
        teacher.info.update(model=tcfg.model.name, run=str(rd.path))
        return teacher
    from methodo.models import build_model
    from methodo.models.backbones import load_pretrained
    from methodo.seed import seed_everything
    from methodo.train.loop import fit

    spec = cfg.distill.teacher
    seed_everything(cfg.seed + 1)  # another start than the student's
    model = build_model(spec.name, input_shape=data.input_shape, n_outputs=data.n_outputs, kind=ds.kind,
                        task=ds.task, **spec.options)
    if spec.pretrained not in (None, "scratch"):
        load_pretrained(model, spec.pretrained, model_name=spec.name)
    tcfg = cfg.train.model_copy(update={"epochs": spec.epochs or cfg.train.epochs, "progress": progress})
    res = fit(model, data, tcfg, seed=cfg.seed + 1, class_weights=class_weights)
    teacher = Teacher(model.eval(), spec.name, "model", lambda x: x)
    teacher.info.update(model=spec.name, options=spec.options, epochs_run=res.epochs_run,
                        best_epoch=res.best_epoch, train_time_s=round(time.perf_counter() - t0, 4))
    return teacher


def build(cfg, ds, data, found: dict, *, class_weights=None, progress: bool = False) -> Teacher:
    """The teacher, ready: a run dir's model with its best weights, or the model spec trained on the run's
    training split (the global RNG states restored after, so the student's numbers do not move); then its
    soft targets over the training tensor, computed once."""
    import random

    import numpy as np
    import torch

    from methodo.train.loop import resolve_device

    device = resolve_device(cfg.train.device)
    t0 = time.perf_counter()
    # Building (random initial weights) and training the teacher draw from the global RNGs: restored after, so
    # the student trains exactly as it would without a teacher (alpha 0 is the scratch student, bit for bit).
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        teacher = _make(cfg, ds, data, found, device, class_weights=class_weights, progress=progress, t0=t0)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
    # The soft targets, once: one row per row of the training tensor the loop indexes.
    t1 = time.perf_counter()
    X = data.tensors["train"][0]
    logits = teacher.logits(X, batch_size=cfg.train.eval_batch_size)
    teacher.targets = torch.softmax(logits / cfg.distill.temperature, dim=1)
    teacher.info.update(kind=teacher.kind, parameters=int(sum(p.numel() for p in teacher.model.parameters())),
                        soft_targets={"rows": int(len(X)), "classes": int(logits.shape[1]),
                                      "seconds": round(time.perf_counter() - t1, 4),
                                      "train_accuracy": round(float(
                                          (logits.argmax(1) == data.tensors["train"][1]).float().mean()), 6)})
    return teacher


# --------------------------------------------------------------------------- side by side


def inference_time(model, X, *, batch_size: int, to_input: Callable = lambda x: x, repeats: int = 3) -> float:
    """Seconds per sample of a forward pass over ``X`` in eval mode (the best of ``repeats`` passes, batches
    of ``batch_size``; a first pass warms up)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    n = len(X)
    if n == 0:
        return 0.0
    best = float("inf")
    with torch.no_grad():
        for r in range(repeats + 1):
            t0 = time.perf_counter()
            for s in range(0, n, batch_size):
                model(to_input(X[s:s + batch_size]).to(device))
            if r:
                best = min(best, time.perf_counter() - t0)
    return best / n


def side_by_side(task: str, y, scores: dict, *, n_classes: int, metric: str, names: list[str], n_boot: int,
                 seed: int, level: float) -> dict:
    """Per model (``scores``: name → test probabilities), the test metrics with percentile-bootstrap intervals,
    and the student − scratch difference of ``metric`` with its paired-bootstrap interval (the same test rows
    resampled for both)."""
    from methodo.evaluate import compute_metrics
    from methodo.evaluate.bootstrap import paired_interval, percentile_intervals

    out = {}
    for name, s in scores.items():
        m = compute_metrics(task, s, y, n_classes, names=names)
        iv = percentile_intervals(task, s, y, n_classes, names=names, n_boot=n_boot, seed=seed, level=level)[0] \
            if n_boot else {}
        out[name] = {"metrics": {k: (None if v is None else float(v)) for k, v in m.items()}, "intervals": iv}
    a, b = out["student"]["metrics"].get(metric), out["scratch"]["metrics"].get(metric)
    diff = None if a is None or b is None else a - b
    iv = paired_interval(metric, scores["scratch"], scores["student"], y, seed=seed, level=level,
                         replicates=max(n_boot, 200)) if diff is not None else None
    return {"models": out, "difference": diff, "interval": iv}
