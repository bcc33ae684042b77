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


def prepare_run(cfg: Config):
    """Steps 1-2 of :func:`run`: ``(cfg, dataset, prepared data, class weights, model)``.

    Seeds everything, loads and checks the data, splits it, fits scaling on the training split
    only, and builds the model sized from the data. Writes nothing. ``methodo lr-find`` uses it too.
    """
    import numpy as np
    import torch

    from methodo.data import load_dataset, prepare
    from methodo.models import build_model
    from methodo.seed import seed_everything
    from methodo.train.loop import check_batch_size, epoch_metric_names

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
    class_weights = None
    if cfg.data.balance == "class_weights" and ds.task == "classification":
        counts = np.bincount(ds.y[data.indices["train"]], minlength=ds.n_classes).astype(np.float64)
        class_weights = torch.tensor(len(data.indices["train"]) / (ds.n_classes * np.maximum(counts, 1)),
                                     dtype=torch.float32)

    # 2. Model, sized from the data.
    model = build_model(cfg.model.name, input_shape=ds.input_shape, n_outputs=data.n_outputs,
                        kind=ds.kind, **cfg.model.options)
    return cfg, ds, data, class_weights, model


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

    from methodo import diagnose as dg
    from methodo.evaluate import baseline_metrics, classification_tables, compute_metrics, predict
    from methodo.report import plots
    from methodo.report.html import render_report
    from methodo.track import make_tracker
    from methodo.train.loop import NonFiniteLoss, fit

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

    # 1-2. Data (split, scaling fitted on train only) and the model sized from it.
    cfg, ds, data, class_weights, model = prepare_run(cfg)

    # 2b. lr=auto / max_lr=auto: the LR range test picks the LR (model and RNGs restored after).
    lr_found = None
    lr_auto_keys = [k for k, v in (("train.optimizer.lr", cfg.train.optimizer.lr),
                                   ("train.scheduler.max_lr", cfg.train.scheduler.options.get("max_lr")))
                    if v == "auto"]
    if lr_auto_keys:
        from methodo.train.lr_find import resolve_auto_lr

        try:
            tcfg, lr_found = resolve_auto_lr(model, data, cfg.train, seed=cfg.seed, class_weights=class_weights)
        except ValueError as exc:
            raise BadInput(f"train.lr_find: {exc}") from None
        cfg = cfg.model_copy(update={"train": tcfg})

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
    if lr_found is not None:
        from methodo.train.lr_find import write as write_lr_find

        write_lr_find(lr_found, run_dir, figure=run_dir / "figures" / "lr_find.png")
        summary["lr_find"] = {"suggested_lr": lr_found.suggested_lr, "suggestion": lr_found.suggestion,
                              "suggestions": lr_found.suggestions, "steps": len(lr_found.lrs),
                              "diverged": lr_found.diverged, "applied_to": lr_auto_keys}
    elif resume_dir is not None and (run_dir / "lr_find.json").is_file():  # found before the interruption
        found = json.loads((run_dir / "lr_find.json").read_text())
        summary["lr_find"] = {k: found[k] for k in ("suggested_lr", "suggestion", "suggestions", "diverged")}
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
            summary["findings"] = [dg.non_finite_loss(exc.epoch, exc.step, exc.value, lr, exc.limit,
                                                      tensor=exc.tensor).to_dict()]
            summary["epochs_run"] = len(history)
            summary["failure"] = str(exc)
            close("failed", "FAILED")
            raise RunFailed(f"training stopped: {exc} (lr={lr}); run dir {run_dir}") from None
        history[:] = res.history
        _write_metrics_csv(run_dir / "metrics.csv", history)
        _write_steps_csv(run_dir / "steps.csv", res, len(data.indices["train"]), cfg.train)
        summary.update(epochs_run=res.epochs_run, best_epoch=res.best_epoch, stopped_early=res.stopped_early)
        summary["training"] = {
            "optimizer_steps": len(res.lrs), "skipped_batches": res.skipped_batches,
            "grad_norm": ({"median": float(np.median(res.grad_norms)), "max": float(np.max(res.grad_norms)),
                           "clipped_to": cfg.train.clip.norm} if res.grad_norms else None),
        }
        if res.monitor:
            _write_json(run_dir / "monitor.json", res.monitor)
        series = {"step_lr": res.lrs, "step_loss": res.losses}
        if len(res.grad_norms) == len(res.lrs):
            series["step_grad_norm"] = res.grad_norms
        tracker.log_series(series)

        # 5. Evaluate every split with the best weights; the test split only here, once.
        inv = data.preprocessor.inverse_y
        preds = {s: predict(model, X, task=ds.task, batch_size=cfg.train.eval_batch_size, inverse_y=inv)
                 for s, (X, _) in data.tensors.items()}
        for s in ("train", "val", "test"):
            summary["metrics"][s] = compute_metrics(ds.task, preds[s], data.raw_y[s], ds.n_classes)
        if ds.task == "classification":
            summary["tables"] = {"test": classification_tables(preds["test"], data.raw_y["test"], ds.class_names)}
        summary["baselines"] = baseline_metrics(ds.task, data.raw_y["train"], data.raw_y["test"], ds.n_classes,
                                                seed=cfg.seed)
        tracker.log_metrics({f"test_{k}": v for k, v in summary["metrics"]["test"].items()})

        # 5b. Free ensembles beside the single best model: snapshots (averaged predictions), SWA.
        summary["ensembles"] = _evaluate_ensembles(model, res, data, ds, cfg, inv)
        for name, e in summary["ensembles"].items():
            tracker.log_metrics({f"test_{name}_{k}": v for k, v in e["metrics"]["test"].items()})

        # 6. Diagnose.
        test_pred = preds["test"].argmax(1) if ds.task == "classification" else preds["test"]
        facts = dg.Facts(task=ds.task, history=history, metrics=summary["metrics"],
                         baselines=summary["baselines"], test_pred=test_pred, test_true=data.raw_y["test"],
                         monitor=res.monitor, skipped_batches=res.skipped_batches)
        summary["findings"] = [f.to_dict() for f in dg.diagnose(facts)]

        # 7. Figures, predictions, summary, report, tracking.
        figs = run_dir / "figures"
        plots.learning_curves(history, res.lrs, figs / "learning_curves.png", best_epoch=res.best_epoch,
                              grad_norms=res.grad_norms, clip=cfg.train.clip.norm)
        if res.monitor:
            plots.weight_distributions(res.monitor, figs / "weights.png")
        if ds.task == "classification":
            plots.confusion_matrix(summary["tables"]["test"]["confusion_matrix"], ds.class_names,
                                   figs / "confusion_matrix.png")
            plots.roc_curves(preds["test"], data.raw_y["test"], ds.class_names, figs / "roc.png")
        else:
            plots.regression_fit(preds["test"], data.raw_y["test"], figs / "regression_fit.png")
        _write_predictions(run_dir / "predictions_test.csv", data.indices["test"], data.raw_y["test"],
                           preds["test"], ds.class_names)

        # 8. Explanations of the test predictions (captum): an image gallery or ranked features.
        if cfg.explain.enabled:
            summary["explain"] = _explain(model, data, ds, cfg, preds["test"], figs)
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
    cfg, ds, data, class_weights, model = prepare_run(cfg)
    tcfg = cfg.train
    if tcfg.optimizer.lr == "auto":  # the ramp sets the LR; any number validates the optimizer
        oc = tcfg.optimizer
        tcfg = tcfg.model_copy(update={"optimizer": type(oc).model_validate({**oc.model_dump(), "lr": 1.0})})
    try:
        res = lr_range_test(model, data, tcfg, seed=cfg.seed, class_weights=class_weights)
    except ValueError as exc:
        raise BadInput(f"train.lr_find: {exc}") from None
    if out is None:
        out_dir = Path("runs") / f"{cfg.name}-lrfind-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    else:
        out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    write(res, out_dir)
    return out_dir, res


def _write_steps_csv(path: Path, res, n_train: int, tcfg) -> None:
    """One row per optimizer step: epoch, LR, data loss and (when computed) the pre-clip gradient norm."""
    import math

    from methodo.train.loop import batches_per_epoch

    per_epoch = math.ceil(batches_per_epoch(n_train, tcfg.batch_size) / tcfg.accumulate)
    skipped: dict[int, int] = {}
    for sk in res.skipped_batches:  # a skipped batch took no optimizer step
        skipped[sk["epoch"]] = skipped.get(sk["epoch"], 0) + 1
    epochs = [e for e in range(1, res.epochs_run + 1) for _ in range(per_epoch - skipped.get(e, 0))]
    norms = res.grad_norms if len(res.grad_norms) == len(res.lrs) else [None] * len(res.lrs)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "epoch", "lr", "loss", "grad_norm"])
        for i, (lr, loss, g) in enumerate(zip(res.lrs, res.losses, norms)):
            w.writerow([i + 1, epochs[i] if i < len(epochs) else "", f"{lr:.6g}", f"{loss:.6g}",
                        "" if g is None else f"{g:.6g}"])
    tmp.replace(path)


def _evaluate_ensembles(model, res, data, ds, cfg, inv) -> dict:
    """Val/test metrics of the snapshot ensemble and of the SWA model, when the run made them."""
    from methodo.evaluate import compute_metrics
    from methodo.train.swa import ensemble_predict

    out = {}
    members = {}
    if res.snapshots:
        members["snapshot"] = ([s["weights"] for s in res.snapshots], {"epochs": [s["epoch"] for s in res.snapshots],
                                                                        "steps": [s["step"] for s in res.snapshots]})
    if res.swa_weights is not None:
        members["swa"] = ([res.swa_weights], {"epochs_averaged": res.swa_epochs})
    for name, (weights, info) in members.items():
        metrics = {}
        for split in ("val", "test"):
            p = ensemble_predict(model, weights, data.tensors[split][0], task=ds.task,
                                 batch_size=cfg.train.eval_batch_size, inverse_y=inv)
            metrics[split] = compute_metrics(ds.task, p, data.raw_y[split], ds.n_classes)
        out[name] = {"members": len(weights), **info, "metrics": metrics}
    return out


def _explain(model, data, ds, cfg, test_probs, figs: Path) -> dict:
    """The report's explanations: attributions for test images, or feature importance for tables."""
    from methodo.explain.report import image_gallery, tabular_importance

    X, y = data.tensors["test"]
    if ds.kind == "image":
        if ds.task != "classification":
            return {"skipped": "image attributions are drawn for classification only"}
        pre = data.preprocessor
        return image_gallery(model, X, test_probs, data.raw_y["test"], ds.class_names, cfg.explain.methods,
                             cfg.explain.n_images, figs / "explanations.png", seed=cfg.seed,
                             mean=None if pre.mean is None else pre.mean.ravel(),
                             std=None if pre.std is None else pre.std.ravel())
    return tabular_importance(model, X, y, ds.task, ds.feature_names, figs / "feature_importance.png",
                              repeats=cfg.explain.permutation_repeats, seed=cfg.seed)


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
