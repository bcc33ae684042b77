"""Labs: every concept of the course as a small deterministic experiment with a figure, measured
numbers and a conclusion checked against them (`methodo lab NAME`).

A lab is a :class:`Lab`: a claim, a list of **steps** and a ``conclude`` function. Each step is a plain
function ``step(ctx)`` that calls methodo's public API (the pipeline, its stages, its metrics and
findings) and records what it measured in ``ctx.numbers`` and the figures it drew through
``ctx.figure``; its docstring is the explanation a notebook shows above it. ``conclude(ctx)`` returns
the one-sentence conclusion, written from the numbers, and the explicit checks whose conjunction is
``conclusion_holds``. The command line (:func:`run_lab`) and the notebook (:mod:`methodo.labs.notebook`)
run the same steps in the same order, so they measure the same numbers.

Labs are registered in :data:`LABS` by name, lazily (``"module:LAB"``), so ``methodo lab list`` and
``methodo --help`` import no torch.

Output folder: ``lab.json`` (schema :data:`SCHEMA`, documented in ``docs/labs.md``) and ``figures/*.png``.
A folder methodo did not make is never written into: ``--out`` must be new, empty, or a folder an
earlier ``methodo lab`` made (it holds the marker file ``.methodo-lab``), whose lab files are replaced.

Examples
--------
>>> from methodo.labs import LABS
>>> "polyfit" in LABS.names()
True
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from methodo.errors import BadInput
from methodo.registry import Registry

LABS = Registry("lab")
"""Every lab by name: its :class:`Lab` (imported when first asked for), a one-line claim as help."""

SCHEMA = "methodo.lab/1"
MARKER = ".methodo-lab"  # a folder holding it was made by `methodo lab`: its lab files may be replaced
MAX_SEED = 2**32 - 1

for _name, _help in (
    ("polyfit", "polynomial degrees 1/3/5/10 on noisy data: training error falls, validation error is U-shaped"),
    ("noise-or-bias", "one network, a learnable and a shuffled target: methodo finds underfitting vs noise_floor"),
    ("polar", "circles in (x, y) need a hidden layer; in (r, θ) one linear layer is enough"),
    ("imbalance-trap", "99% negatives: the all-negative model has accuracy 0.99, recall 0, precision undefined"),
    ("roc-threshold", "the ROC curve, and a threshold chosen on val for a recall target, applied to test"),
    ("momentum", "an ill-conditioned quadratic: momentum 0.99 converges faster and is stable at larger steps"),
    ("perplexity", "perplexity by hand equals methodo's metric; what it does and does not tell"),
    ("iou", "IoU and Dice by hand on tiny masks and boxes equal methodo's metrics"),
    ("splitting-early-stopping", "val loss turns up while train falls; early stopping restores the best epoch"),
    ("clipping", "a deliberately exploding run diverges without gradient clipping and trains with it"),
    ("regularization", "L1 drives most weights below 1e-3, L2 shrinks all; dropout narrows the gap; max-norm bounds units"),
    ("optimizers", "the 12 torch.optim optimizers on one task: loss curves side by side, final loss table"),
    ("sampling", "random vs stratified vs cluster sampling: the class-proportion error of each over 50 draws"),
    ("smote", "none / oversample / SMOTE / class weights on the training rows only: rare-class recall rises"),
    ("feature-selection", "noise features hurt, selection on train recovers; selection on all rows leaks"),
    ("embedding", "penultimate-layer embeddings in 2-D: a trained network's cluster by class, an untrained one's do not"),
    ("schedulers", "step, warmup, cyclic, one-cycle, cosine restarts: LR curves; one-cycle needs the smallest budget"),
    ("snapshots", "one cosine-restarts run's snapshots, ensembled, beat its last snapshot on test log-loss"),
    ("lr-finder", "the LR range test's suggestion, trained, lands in the best region of a grid of learning rates"),
    ("weights", "per-layer weight spread: a diverging run's grows by orders of magnitude, a converging run's settles"),
    ("transfer", "few labels: a backbone pretrained on a related task beats the same network trained from scratch"),
    ("distillation", "a small student learning from a teacher's soft targets against the same student from scratch"),
    ("lora", "LoRA trains a small share of the parameters and nears full fine-tuning's accuracy"),
    ("hpo", "grid, random and TPE search on the same budget: best-so-far curves over 5 seeds"),
    ("augmentation", "75 training images: flip/rotation/crop raise test accuracy; texture probes show what a CNN uses"),
    ("explain", "wolves always on snow: high test accuracy, attributions off the animal, a swapped background exposes it"),
    ("adversarial", "FGSM and one-pixel attacks on a digits CNN: the share fooled grows with the budget; a gallery"),
    ("discrimination", "a biased hiring table: the disparity, the proxy feature, label bias; a mitigation and its cost"),
):
    LABS.register_lazy(_name, f"methodo.labs.{_name.replace('-', '_')}:LAB", help=_help)
del _name, _help


def step(fn: Callable[["LabContext"], Any]) -> Callable[["LabContext"], Any]:
    """Mark a function as a lab step: it runs with one thread in the BLAS/OpenMP pools (scikit-learn's gradient
    boosting, numpy), the same in the command and the notebook; on a shared machine more threads only wait."""
    import functools

    @functools.wraps(fn)
    def run(ctx: "LabContext"):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return fn(ctx)

    return run


@dataclass(frozen=True)
class Lab:
    """A lab: what it claims, the steps that measure it, and how the conclusion is drawn.

    ``steps`` run in order, each ``step(ctx)``; ``conclude(ctx)`` returns ``(sentence, checks)``: the
    conclusion in one sentence made from ``ctx.numbers``, and named booleans, all true when the claim holds.
    """

    name: str
    title: str
    claim: str
    steps: tuple[Callable[["LabContext"], Any], ...]
    conclude: Callable[["LabContext"], tuple[str, dict[str, bool]]]
    intro: str = ""  # markdown shown first in the notebook: the course's idea behind the lab

    @property
    def module(self) -> str:
        return self.steps[0].__module__


@dataclass
class LabResult:
    """What a lab measured: its numbers, the conclusion drawn from them, the checks and the figures."""

    lab: str
    title: str
    claim: str
    seed: int
    numbers: dict[str, Any]
    conclusion: str
    checks: dict[str, bool]
    figures: list[str]
    duration_s: float
    out: Path | None = None

    @property
    def conclusion_holds(self) -> bool:
        return all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        """``lab.json``: the keys documented in ``docs/labs.md`` (schema ``methodo.lab/1``)."""
        from methodo import __version__

        return {"schema": SCHEMA, "lab": self.lab, "title": self.title, "claim": self.claim, "seed": self.seed,
                "command": f"methodo lab {self.lab} --seed {self.seed}", "conclusion": self.conclusion,
                "conclusion_holds": self.conclusion_holds, "checks": self.checks, "numbers": self.numbers,
                "figures": self.figures, "duration_s": round(self.duration_s, 3), "methodo": __version__}


@dataclass
class LabContext:
    """What the steps of one lab share: the seed, the output folder, what was measured so far, and
    ``state`` (a dict for intermediate objects: data, fitted models, curves)."""

    lab: Lab
    seed: int
    out: Path
    notebook: bool = False
    numbers: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def record(self, **numbers) -> dict[str, Any]:
        """Add measured numbers (JSON values: rounded floats, ints, bools, None, lists, dicts); returns them."""
        self.numbers.update(numbers)
        return numbers

    def figure(self, fig, name: str) -> Path:
        """Save a matplotlib figure as ``figures/NAME.png`` (small: 100 dpi), close it, and show it in a notebook."""
        import matplotlib.pyplot as plt

        path = self.out / "figures" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".png.tmp")
        fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None})  # no version stamp: same bytes
        os.replace(tmp, path)
        plt.close(fig)
        rel = path.relative_to(self.out).as_posix()
        if rel not in self.figures:
            self.figures.append(rel)
        if self.notebook:
            from IPython.display import Image, display

            display(Image(filename=str(path)))
        return path

    def run_dir(self, name: str) -> Path:
        """A scratch folder for a pipeline run of this lab (removed when the lab ends)."""
        import tempfile

        if "_tmp" not in self.state:
            self.state["_tmp"] = tempfile.TemporaryDirectory(prefix=f"methodo-lab-{self.lab.name}-")
        return Path(self.state["_tmp"].name) / name

    def config(self, name: str, config: dict):
        """``config`` (a config as a dict) validated as a :class:`~methodo.config.Config`, with what every lab run
        shares underneath it: the lab's seed, one CPU thread, no MLflow, no progress, no explanations (unless
        ``config`` says otherwise). What :meth:`run_pipeline` and :meth:`train` run; for the other entry points
        of the library that take a config (``methodo.pipeline.lr_find``)."""
        from methodo.config import validate

        quiet = {"name": f"lab-{self.lab.name}-{name}", "seed": self.seed, "track": {"mlflow": False},
                 "explain": {"enabled": False}, "train": {"threads": 1, "progress": False}}
        return validate(_merge(quiet, config), source=f"lab {self.lab.name} ({name})")

    def run_pipeline(self, name: str, config: dict):
        """``methodo.run`` on ``config`` (a config as a dict) in a scratch run dir, quietly: the lab's seed, one
        CPU thread, no MLflow, no progress, no explanations (unless ``config`` says otherwise). Returns the
        :class:`~methodo.pipeline.RunResult` (its ``record`` is ``summary.json``)."""
        import methodo

        return methodo.run(self.config(name, config), out=self.run_dir(name))

    def train(self, name: str, config: dict):
        """The pipeline's own first stages on ``config`` (merged as in :meth:`run_pipeline`), without its evaluation
        and outputs: ``methodo.stages.prepare`` (data, split, scaling on train only, the model, its pretrained
        weights and transfer strategy) and the training loop ``methodo.train.loop.fit`` with the configured
        optimizer, scheduler, regularizers, clipping and early stopping, and, as ``methodo run`` trains, the transfer
        strategy's seams (parameter groups, unfreezing, a linear probe on cached features) and the extra losses
        (``stages.extra_losses``: adversarial training; with ``distill.teacher`` the teacher's soft targets, the
        teacher built first by ``stages.build_teacher``). Returns ``(prepared, result)``: the
        :class:`~methodo.stages.Prepared` (its ``model`` holds the weights the loop kept, its ``plan`` the transfer
        plan) and the :class:`~methodo.train.loop.TrainResult` (``history``, the per-step ``lrs`` and ``losses``,
        ``best_epoch``); with a teacher, ``prepared.teacher`` is it (a :class:`~methodo.transfer.distill.Teacher`).
        A diverged training raises ``methodo.train.loop.NonFiniteLoss``; the test split is not read."""
        import torch

        from methodo import stages
        from methodo.train.loop import fit

        cfg = self.config(name, config)
        threads = torch.get_num_threads()
        try:
            prep = stages.prepare(cfg)
            model, data, groups, on_epoch = stages.transfer_seams(prep)  # as stages.train gives them
            teacher = stages.build_teacher(prep)
            if teacher is not None:
                prep.teacher = teacher
            return prep, fit(model, data, prep.cfg.train, seed=cfg.seed, class_weights=prep.class_weights,
                             on_epoch=on_epoch, param_groups=groups, extra_loss=stages.extra_losses(prep, teacher))
        finally:
            torch.set_num_threads(threads)

    def finish(self) -> LabResult:
        """Draw the conclusion from the numbers, write ``lab.json`` and return the result."""
        sentence, checks = self.lab.conclude(self)
        tmp = self.state.pop("_tmp", None)
        if tmp is not None:
            tmp.cleanup()
        res = LabResult(self.lab.name, self.lab.title, self.lab.claim, self.seed, _jsonable(self.numbers), sentence,
                        {k: bool(v) for k, v in checks.items()}, list(self.figures),
                        time.perf_counter() - self.started, self.out)
        _write_json(self.out / "lab.json", res.to_dict())
        return res


def predictions(res, split: str):
    """``(y, probabilities)`` of a classification run's ``predictions_SPLIT.csv`` (``val`` or ``test``): class
    indices in the run's class order (``res.record.data.classes``) and ``(n, classes)`` float32 scores."""
    import csv

    import numpy as np

    names = res.record.data.classes
    with open(res.run_dir / f"predictions_{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([names.index(r["true"]) for r in rows])
    p = np.array([[float(r[f"p_{c}"]) for c in names] for r in rows], dtype=np.float32)
    return y, p


def _merge(under: dict, over: dict) -> dict:
    out = dict(under)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _jsonable(obj):
    """Numbers as JSON values: numpy and torch scalars to Python, floats rounded to 6 significant digits."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float):
        return float(f"{obj:.6g}") if obj == obj and abs(obj) != float("inf") else None
    return obj


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- finding a lab, its folder


def get_lab(name: str) -> Lab:
    """The registered lab ``name``; ``BadInput`` naming the choices otherwise."""
    if not isinstance(name, str) or name not in LABS.names():
        raise BadInput(f"unknown lab {name!r} (choices: {', '.join(LABS.names())})")
    return LABS.get(name)


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise BadInput(f"--seed {seed!r}: give an integer from 0 to {MAX_SEED}")
    return seed


def claim_folder(out: str | Path, *, flag: str = "--out") -> Path:
    """Create ``out`` (or accept it when empty, or made by an earlier ``methodo lab``) and mark it as a lab folder.

    A file, or a non-empty folder methodo lab did not make (a run dir, anything of the user's), is refused.
    """
    path = Path(out)
    if str(out) == "":
        raise BadInput(f"{flag} '': give a folder name")
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise BadInput(f"{flag} {out}: exists and is not a folder")
        if not (path / MARKER).is_file() and any(path.iterdir()):
            raise BadInput(f"{flag} {out}: folder is not empty and was not made by methodo lab; choose a new or "
                           "empty folder (methodo never writes over your files)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        (path / MARKER).touch()
    except OSError as exc:
        raise BadInput(f"{flag} {out}: cannot create it ({exc.strerror or exc})") from None
    return path


def start(name: str, *, seed: int = 0, out: str | Path | None = None, notebook: bool = False) -> LabContext:
    """A :class:`LabContext` for lab ``name`` writing to ``out`` (default ``labs/NAME``), ready for its steps."""
    lab = get_lab(name)
    seed = check_seed(seed)
    path = claim_folder(out if out is not None else Path("labs") / name)
    return LabContext(lab, seed, path, notebook=notebook)


def run_lab(name: str, *, seed: int = 0, out: str | Path | None = None) -> LabResult:
    """Run every step of lab ``name`` and write ``lab.json`` and its figures into ``out``.

    Examples
    --------
    >>> import tempfile
    >>> res = run_lab("iou", seed=0, out=tempfile.mkdtemp() + "/iou")  # doctest: +SKIP
    >>> res.conclusion_holds                                          # doctest: +SKIP
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    ctx = start(name, seed=seed, out=out)
    for step in ctx.lab.steps:
        step(ctx)
    return ctx.finish()


def run_all(out: str | Path, *, seed: int = 0, progress: Callable[[LabResult], None] | None = None) -> list[LabResult]:
    """Run every registered lab into ``out/NAME`` and write the gallery ``out/index.html`` and ``out/README.md``."""
    from methodo.labs.gallery import write_gallery

    root = claim_folder(out)
    seed = check_seed(seed)
    results = []
    for name in LABS.names():
        res = run_lab(name, seed=seed, out=root / name)
        results.append(res)
        if progress is not None:
            progress(res)
    write_gallery(root, results, seed=seed)
    return results


def show_numbers(numbers: dict, *, limit: int = 8) -> list[tuple[str, str]]:
    """``(key, text)`` pairs of the numbers, nested keys dotted, floats in 4 significant digits, lists cut."""
    rows: list[tuple[str, str]] = []

    def fmt(v):
        if v is None:
            return "undefined"
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, list):
            items = [fmt(x) for x in v[:limit]]
            return "[" + ", ".join(items) + (f", ... ({len(v)} in all)" if len(v) > limit else "") + "]"
        return str(v)

    def walk(prefix, d):
        for k, v in d.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(key, v)
            else:
                rows.append((key, fmt(v)))

    walk("", numbers)
    return rows


__all__ = ["LABS", "Lab", "LabContext", "LabResult", "SCHEMA", "get_lab", "run_lab", "run_all", "start"]
