"""The one pipeline: config → data → model → train → evaluate → diagnose → report + track.

This is the only module that strings the stages together. Everything that can be wrong with the
user's input (config, data, model choice, output dir) is checked before the run dir is created,
so a bad input leaves nothing behind.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methodo.config import Config, dump_yaml, flat_params, load_config
from methodo.errors import BadInput, ConfigError, RunFailed


@dataclass
class RunResult:
    """What a run produced: its folder and its summary (the content of ``summary.json``)."""

    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")

    @property
    def metrics(self) -> dict[str, dict]:
        return self.summary.get("metrics", {})

    @property
    def findings(self) -> list[dict]:
        return self.summary.get("findings", [])


def _new_run_dir(out: str | Path | None, name: str) -> Path:
    if out is not None:
        run_dir = Path(out)
        if (run_dir / "summary.json").exists() or (run_dir / "config.yaml").exists():
            raise BadInput(f"--out {run_dir}: already holds a run; choose another folder or use --resume {run_dir}")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{name}-{stamp}-{secrets.token_hex(2)}"
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "figures").mkdir(exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"output dir {run_dir}: cannot write there ({exc.strerror or exc})") from None
    return run_dir


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _write_metrics_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)


def _versions() -> dict[str, str]:
    import torch

    from methodo import __version__

    return {"methodo": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run(config: str | Path | Config, overrides: list[str] | tuple[str, ...] = (), *,
        out: str | Path | None = None, resume: str | Path | None = None) -> RunResult:
    """Run the whole pipeline and return its :class:`RunResult`.

    Parameters
    ----------
    config : path to a YAML config, or a validated :class:`~methodo.config.Config`.
    overrides : dotted ``key=value`` strings applied on top of the file.
    out : the run dir to create (default ``runs/NAME-TIMESTAMP-XXXX``).
    resume : a run dir to continue from its ``last`` checkpoint (its saved config is used).

    Examples
    --------
    >>> import methodo
    >>> res = methodo.run("examples/digits.yaml", overrides=["train.epochs=3"])  # doctest: +SKIP
    >>> res.metrics["test"]["accuracy"] > 0.8                                  # doctest: +SKIP
    True
    """
    import numpy as np
    import torch

    from methodo import diagnose as dg
    from methodo.data import load_dataset, prepare
    from methodo.evaluate import check_metric_names, evaluate_splits, predict
    from methodo.models import build_model
    from methodo.report import plots
    from methodo.report.html import render_report
    from methodo.seed import seed_everything
    from methodo.track import make_tracker
    from methodo.train.loop import NonFiniteLoss, check_batch_size, epoch_metric_names, fit

    t_start = time.perf_counter()
    resume_dir = Path(resume) if resume is not None else None
    if resume_dir is not None:
        if not (resume_dir / "checkpoints" / "last.safetensors").is_file():
            raise BadInput(f"--resume {resume_dir}: no checkpoints/last.safetensors to resume from")
        cfg = load_config(resume_dir / "config.yaml", overrides)
    elif isinstance(config, Config):
        cfg = config
    else:
        cfg = load_config(config, overrides)

    # 1. Data: load, check the task, split, fit scaling on train only.
    seed_everything(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ds = load_dataset(cfg.data)
    if cfg.task is not None and cfg.task != ds.task:
        raise ConfigError(f"task: dataset {ds.name!r} is a {ds.task} dataset (got task: {cfg.task}); "
                          f"use task: {ds.task} or omit it")
    cfg = cfg.model_copy(update={"task": ds.task})
    if cfg.train.early_stopping and cfg.train.early_stopping.monitor not in epoch_metric_names(ds.task):
        raise ConfigError(f"train.early_stopping.monitor: {cfg.train.early_stopping.monitor!r} is not an "
                          f"epoch metric of this task; choose one of {epoch_metric_names(ds.task)}")
    data = prepare(ds, cfg.data, cfg.seed)
    check_batch_size(cfg.train.batch_size, len(data.indices["train"]))
    check_metric_names(ds.task, cfg.evaluate.metrics)
    class_weights = None
    if cfg.data.balance == "class_weights" and ds.task in ("classification", "segmentation"):
        # rows per class, or pixels per class for segmentation
        counts = np.bincount(ds.y[data.indices["train"]].ravel(), minlength=ds.n_classes).astype(np.float64)
        class_weights = torch.tensor(counts.sum() / (ds.n_classes * np.maximum(counts, 1)), dtype=torch.float32)

    # 2. Model, sized from the data.
    model = build_model(cfg.model.name, input_shape=ds.input_shape, n_outputs=data.n_outputs,
                        kind=ds.kind, task=ds.task, **cfg.model.options)

    # 3. The run dir (nothing was written before this line) and tracking.
    run_dir = resume_dir or _new_run_dir(out, cfg.name)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    (run_dir / "preprocessor.json").write_text(data.preprocessor.to_json())
    tracker = make_tracker(cfg.track, cfg.name)
    summary: dict[str, Any] = {
        "status": "running", "name": cfg.name, "task": ds.task, "dataset": ds.name, "seed": cfg.seed,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "data": {
            "description": ds.description, "kind": ds.kind, "input_shape": list(ds.input_shape),
            "n": int(len(ds.y)), "classes": ds.class_names,
            "splits": {s: {"n": int(len(ix)), **({"class_counts": data.class_counts[s]} if data.class_counts else {})}
                       for s, ix in data.indices.items()},
            **({"count_unit": "pixels"} if ds.task == "segmentation" else {}),
            **({"extra": {s: {"n": int(len(X)), "description": ds.extra_descriptions.get(s, "")}
                          for s, (X, _) in ds.extra.items()}} if ds.extra else {}),
        },
        "model": {"name": cfg.model.name, "parameters": int(sum(p.numel() for p in model.parameters()))},
        "metrics": {}, "baselines": {}, "findings": [], "epochs_run": 0, "best_epoch": None,
        "duration_s": 0.0, "mlflow_run_id": None, "versions": _versions(), "git_commit": _git_commit(),
        "resumed": resume_dir is not None,
    }
    params = flat_params(cfg)
    params["world_size"] = summary["world_size"]
    tracker.start(params, {"methodo.run_dir": str(run_dir.resolve()), "methodo.run_name": run_dir.name,
                           "methodo.dataset": ds.name})
    summary["mlflow_run_id"] = tracker.run_id
    _write_json(run_dir / "summary.json", summary)
    history: list[dict] = []

    def on_epoch(row: dict) -> None:
        history.append(row)
        _write_metrics_csv(run_dir / "metrics.csv", history)
        tracker.log_epoch(row)

    def close(status: str, mlflow_status: str) -> RunResult:
        summary["status"] = status
        summary["duration_s"] = round(time.perf_counter() - t_start, 3)
        _write_json(run_dir / "summary.json", summary)
        render_report(run_dir)
        tracker.finish(mlflow_status, run_dir)
        return RunResult(run_dir, summary)

    try:
        # 4. Train: the best weights (by the monitor) are loaded into the model at the end.
        try:
            res = fit(model, data, cfg.train, seed=cfg.seed, ckpt_dir=run_dir / "checkpoints",
                      class_weights=class_weights, on_epoch=on_epoch, resume_from=(run_dir / "checkpoints") if resume_dir else None)
        except NonFiniteLoss as exc:
            lr = cfg.train.optimizer.lr
            summary["findings"] = [dg.non_finite_loss(exc.epoch, exc.step, exc.value, lr, exc.limit).to_dict()]
            summary["epochs_run"] = len(history)
            summary["failure"] = str(exc)
            close("failed", "FAILED")
            raise RunFailed(f"training stopped: {exc} (lr={lr}); run dir {run_dir}") from None
        history[:] = res.history
        _write_metrics_csv(run_dir / "metrics.csv", history)
        summary.update(epochs_run=res.epochs_run, best_epoch=res.best_epoch, stopped_early=res.stopped_early)

        # 5. Evaluate every split with the best weights; the test split only here, once.
        inv = data.preprocessor.inverse_y
        preds = {s: predict(model, X, task=ds.task, batch_size=cfg.train.eval_batch_size, inverse_y=inv, y=Y)
                 for s, (X, Y) in data.tensors.items()}
        summary.update(evaluate_splits(ds.task, preds, data.raw_y, n_classes=ds.n_classes or len(ds.vocab or []),
                                       class_names=ds.class_names, ecfg=cfg.evaluate, seed=cfg.seed))
        for split in ("test", *ds.extra):
            tracker.log_metrics({f"{split}_{k}": v for k, v in summary["metrics"][split].items()})

        # 6. Diagnose; label errors are hunted on rows the model never trained on (val + test).
        classify = ds.task == "classification"
        test_pred, test_true = preds["test"].argmax(1) if classify else preds["test"], data.raw_y["test"]
        if ds.task == "segmentation":  # the checks look at pixels
            test_pred, test_true = preds["test"].argmax(1).ravel(), test_true.ravel()
        elif ds.task == "language_modeling":  # no single prediction per token to look at
            test_pred = test_true = None
        facts = dg.Facts(
            task=ds.task, history=history, metrics=summary["metrics"], baselines=summary["baselines"],
            test_pred=test_pred, test_true=test_true, intervals=summary["intervals"]["test"],
            undefined=summary["undefined"].get("test", {}), class_names=ds.class_names, lr=cfg.train.optimizer.lr,
            oos_proba=np.concatenate([preds["val"], preds["test"]]) if classify else None,
            oos_true=np.concatenate([data.raw_y["val"], data.raw_y["test"]]),
            oos_rows=np.concatenate([data.indices["val"], data.indices["test"]]))
        findings = dg.diagnose(facts)
        summary["findings"] = [f.to_dict() for f in findings]

        # 7. Figures, predictions, summary, report, tracking.
        figs = run_dir / "figures"
        plots.learning_curves(history, res.lrs, figs / "learning_curves.png", best_epoch=res.best_epoch)
        if ds.task == "classification":
            plots.confusion_matrix(summary["tables"]["test"]["confusion_matrix"], ds.class_names,
                                   figs / "confusion_matrix.png")
            plots.roc_curves(preds["test"], data.raw_y["test"], ds.class_names, figs / "roc.png")
            plots.pr_curves(preds["test"], data.raw_y["test"], ds.class_names, figs / "pr.png")
            plots.reliability(preds["test"], data.raw_y["test"], figs / "reliability.png")
            if "threshold" in summary:
                plots.threshold_sweep(preds["val"][:, 1], data.raw_y["val"], summary["threshold"]["value"],
                                      figs / "threshold.png")
            suspects = next((f.evidence["top"] for f in findings if f.id == "label_errors"), None)
            if suspects:
                plots.label_errors(suspects, ds, figs / "label_errors.png")
        elif ds.task == "segmentation":
            plots.confusion_matrix(summary["tables"]["test"]["confusion_matrix"], ds.class_names,
                                   figs / "confusion_matrix.png")
            plots.segmentation_samples(ds.X[data.indices["test"]], data.raw_y["test"], preds["test"].argmax(1),
                                       ds.class_names, figs / "segmentation.png")
            _write_segmentation_predictions(run_dir / "predictions_test.csv", data.indices["test"],
                                            data.raw_y["test"], preds["test"].argmax(1), ds.class_names)
        elif ds.task == "language_modeling":
            from methodo.evaluate.lm import sample_text

            summary["sample"] = sample_text(model, data.tensors["test"][0][0], ds.vocab, seed=cfg.seed)
            plots.perplexity_bars(summary["metrics"], summary["baselines"], summary.get("extra_baselines", {}),
                                  figs / "perplexity.png")
        else:
            plots.regression_fit(preds["test"], data.raw_y["test"], figs / "regression_fit.png")
        if ds.task in ("classification", "regression"):
            _write_predictions(run_dir / "predictions_test.csv", data.indices["test"], data.raw_y["test"],
                               preds["test"], ds.class_names)
        return close("finished", "FINISHED")
    except RunFailed:
        raise
    except BaseException as exc:
        summary["failure"] = f"{type(exc).__name__}: {exc}"
        killed = isinstance(exc, KeyboardInterrupt)
        try:
            close("failed", "KILLED" if killed else "FAILED")
        except Exception:  # the original error matters more than a failed report
            pass
        raise


def _write_predictions(path: Path, rows, y_true, pred, class_names) -> None:
    import numpy as np

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        if class_names:
            w.writerow(["row", "true", "predicted", *[f"p_{c}" for c in class_names]])
            for r, t, p in zip(rows, y_true, pred):
                w.writerow([int(r), class_names[int(t)], class_names[int(np.argmax(p))], *[f"{v:.6f}" for v in p]])
        else:
            w.writerow(["row", "true", "predicted"])
            for r, t, p in zip(rows, y_true, pred):
                w.writerow([int(r), f"{float(t):.6g}", f"{float(p):.6g}"])


def _write_segmentation_predictions(path: Path, rows, masks, pred, class_names) -> None:
    """One row per test image: pixel accuracy and the classes in the true and predicted masks."""
    import numpy as np

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row", "pixel_accuracy", "true_classes", "predicted_classes"])
        for r, t, p in zip(rows, masks, pred):
            names = lambda m: " ".join(class_names[c] for c in np.unique(m))
            w.writerow([int(r), f"{float((t == p).mean()):.4f}", names(t), names(p)])
