"""The one pipeline: config → data → model → train → evaluate → diagnose → report + track.

This is the only module that strings the stages together. Everything that can be wrong with the
user's input (config, data, model choice, output dir) is checked before the run dir is created,
so a bad input leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from methodo.config import Config, dump_yaml, flat_params, load_config
from methodo import signals
from methodo.errors import BadInput, ConfigError, DataError, RunFailed, Terminated
from methodo.paths import safe_child


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


def prepare_run(cfg: Config):
    """Steps 1-2 of :func:`run`: ``(cfg, dataset, prepared data, class weights, model)``.

    Seeds everything, loads and checks the data, splits it, fits scaling on the training split
    only, and builds the model sized from the data. Writes nothing. ``methodo lr-find`` uses it too.
    """
    import torch

    from methodo.data import load_dataset, prepare
    from methodo.evaluate import check_metric_names
    from methodo.models import build_model
    from methodo.seed import seed_everything
    from methodo.train.loop import check_batch_size, epoch_metric_names, resolve_device

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
    n_fit = len(data.tensors["train"][1])
    if cfg.train.batch_size > n_fit and n_fit != len(data.indices["train"]):
        raise DataError(f"train.batch_size={cfg.train.batch_size} is larger than the training split after "
                        f"data.balance={cfg.data.balance} ({n_fit} rows); use at most {n_fit}")
    check_batch_size(cfg.train.batch_size, n_fit)
    check_metric_names(ds.task, cfg.evaluate.metrics)
    resolve_device(cfg.train.device)  # `cuda` without a GPU is bad input, found before anything is written
    class_weights = data.class_weights  # data.balance: class_weights (else None)

    # 2. Model, sized from the data (after feature steps).
    model = build_model(cfg.model.name, input_shape=data.input_shape, n_outputs=data.n_outputs,
                        kind=ds.kind, task=ds.task, **cfg.model.options)
    return cfg, ds, data, class_weights, model


@_torch_threads_kept()
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
    from methodo.data.audit import AuditFacts, audit as audit_data
    from methodo.data.augment import gallery
    from methodo.data.features import save_pipeline
    from methodo.evaluate import evaluate_splits, predict
    from methodo.report import plots
    from methodo.report.html import render_report
    from methodo.track import make_tracker
    from methodo.train.loop import NonFiniteLoss, fit

    t_start = time.perf_counter()
    resume_dir = Path(resume) if resume is not None else None
    resume_from = None
    if resume_dir is not None:
        if not (resume_dir / "config.yaml").is_file():
            raise BadInput(f"--resume {resume_dir}: not a run dir (no config.yaml)")
        cfg = load_config(resume_dir / "config.yaml", overrides)
        if (resume_dir / "checkpoints" / "last.safetensors").is_file():
            resume_from = resume_dir / "checkpoints"
        else:  # killed before the first epoch ended: start again from scratch, in the same dir
            print(f"--resume {resume_dir}: no checkpoint yet, starting from epoch 1", file=sys.stderr)
    elif isinstance(config, Config):
        cfg = config
    else:
        cfg = load_config(config, overrides)
    if cfg.data.split.method == "kfold" and cfg.data.split.fold is None:
        if resume_dir is not None:
            raise BadInput(f"--resume {resume_dir}: a k-fold run resumes one fold at a time: "
                           f"--resume {resume_dir}/folds/fold-I")
        return _run_kfold(cfg, out=out)

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
    data_findings = audit_data(AuditFacts.from_dataset(ds, data.indices), max_queries=2000)

    # 3. The run dir (nothing was written before this line) and tracking.
    run_dir = resume_dir or _new_run_dir(out, cfg.name)
    if resume_dir is not None:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "figures").mkdir(exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    (run_dir / "preprocessor.json").write_text(data.preprocessor.to_json())
    if data.features is not None:  # the fitted feature Pipeline, saved with the model (skops: no pickle)
        save_pipeline(data.features, run_dir / "features.skops")
    tracker = make_tracker(cfg.track, cfg.name)
    summary: dict[str, Any] = {
        "status": "running", "name": cfg.name, "task": ds.task, "dataset": ds.name, "seed": cfg.seed,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "data": {
            "description": ds.description, "kind": ds.kind, "input_shape": list(ds.input_shape),
            "n": int(len(ds.y)), "classes": ds.class_names,
            "splits": {s: {"n": int(len(ix)), **({"class_counts": data.class_counts[s]} if data.class_counts else {})}
                       for s, ix in data.indices.items()},
            **_data_stage_summary(cfg, data),
            **({"count_unit": "pixels"} if ds.task == "segmentation" else {}),
            **({"extra": {s: {"n": int(len(X)), "description": ds.extra_descriptions.get(s, "")}
                          for s, (X, _) in ds.extra.items()}} if ds.extra else {}),
        },
        "model": {"name": cfg.model.name, "parameters": int(sum(p.numel() for p in model.parameters()))},
        "metrics": {}, "baselines": {}, "findings": [], "epochs_run": 0, "best_epoch": None,
        "duration_s": 0.0, "mlflow_run_id": None, "versions": _versions(), "git_commit": _git_commit(),
        "resumed": resume_from is not None,
    }
    if data.class_counts_before_balancing is not None:
        train_entry = summary["data"]["splits"]["train"]
        train_entry["class_counts_before_balancing"] = data.class_counts_before_balancing
        train_entry["n_after_balancing"] = int(len(data.tensors["train"][1]))
    params = flat_params(cfg)
    params["world_size"] = summary["world_size"]
    previous_sigterm = signals.install()
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
    if resume_from is not None:  # metrics.csv keeps the epochs run before the interruption
        from methodo.train.checkpoint import load_checkpoint

        history = list(load_checkpoint(resume_from / "last.safetensors")[1]["history"])

    def on_epoch(row: dict) -> None:
        history.append(row)
        _write_metrics_csv(run_dir / "metrics.csv", history)
        tracker.log_epoch(row)

    def close(status: str, mlflow_status: str) -> RunResult:
        summary["status"] = status
        summary["duration_s"] = round(time.perf_counter() - t_start, 3)
        try:
            _write_json(run_dir / "summary.json", summary)
            render_report(run_dir)
        finally:  # the tracking run is ended even when the disk refuses the summary
            tracker.finish(mlflow_status, run_dir)
        return RunResult(run_dir, summary)

    try:
        # 4. Train: the best weights (by the monitor) are loaded into the model at the end.
        try:
            res = fit(model, data, cfg.train, seed=cfg.seed, ckpt_dir=run_dir / "checkpoints",
                      class_weights=class_weights, on_epoch=on_epoch, resume_from=resume_from)
        except NonFiniteLoss as exc:
            lr = cfg.train.optimizer.lr
            summary["findings"] = [dg.non_finite_loss(exc.epoch, exc.step, exc.value, lr, exc.limit,
                                                      tensor=exc.tensor).to_dict()]
            summary["epochs_run"] = len(history)
            summary["failure"] = str(exc)
            close("failed", "FAILED")
            raise RunFailed(f"training stopped: {exc} (lr={lr}); run dir {run_dir}") from None
        signals.check()
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
        y_lm = ds.task == "language_modeling"  # predict() scores the target tokens: it needs them
        preds = {s: predict(model, data.inputs(s), task=ds.task, batch_size=cfg.train.eval_batch_size,
                            inverse_y=inv, y=data.tensors[s][1] if y_lm else None) for s in data.tensors}
        summary.update(evaluate_splits(ds.task, preds, data.raw_y, n_classes=_n_classes(ds),
                                       class_names=ds.class_names, ecfg=cfg.evaluate, seed=cfg.seed))
        for split in ("test", *ds.extra):
            tracker.log_metrics({f"{split}_{k}": v for k, v in summary["metrics"][split].items()})
        reference = None
        if cfg.evaluate.reference and ds.kind == "tabular":  # reference_model says None for other tasks
            from methodo.evaluate.baselines import reference_model  # noise or bias? (the finding decides)

            reference = reference_model(ds.task, data.inputs("train").numpy(), data.raw_y["train"],
                                        data.inputs("val").numpy(), data.raw_y["val"], seed=cfg.seed)
            if reference is not None:
                summary["reference"] = reference

        # 5b. Free ensembles beside the single best model: snapshots (averaged predictions), SWA.
        summary["ensembles"] = _evaluate_ensembles(model, res, data, ds, cfg, inv)
        for name, e in summary["ensembles"].items():
            tracker.log_metrics({f"test_{name}_{k}": v for k, v in e["metrics"]["test"].items()})

        signals.check()
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
            oos_rows=np.concatenate([data.indices["val"], data.indices["test"]]),
            monitor=res.monitor, skipped_batches=res.skipped_batches, reference=reference)
        findings = sorted(data_findings + dg.diagnose(facts), key=lambda x: dg.SEVERITY_ORDER.get(x.severity, 9))
        summary["findings"] = [f.to_dict() for f in findings]

        # 7. Figures, predictions, summary, report, tracking.
        def fig(name: str) -> Path:  # every figure path is checked to stay inside the run dir
            return safe_child(run_dir, f"figures/{name}")

        plots.learning_curves(history, res.lrs, fig("learning_curves.png"), best_epoch=res.best_epoch,
                              grad_norms=res.grad_norms, clip=cfg.train.clip.norm)
        if res.monitor:
            plots.weight_distributions(res.monitor, fig("weights.png"))
        if ds.task == "classification":
            plots.confusion_matrix(summary["tables"]["test"]["confusion_matrix"], ds.class_names,
                                   fig("confusion_matrix.png"))
            plots.roc_curves(preds["test"], data.raw_y["test"], ds.class_names, fig("roc.png"))
            plots.pr_curves(preds["test"], data.raw_y["test"], ds.class_names, fig("pr.png"))
            plots.reliability(preds["test"], data.raw_y["test"], fig("reliability.png"))
            if "threshold" in summary:
                plots.threshold_sweep(preds["val"][:, 1], data.raw_y["val"], summary["threshold"]["value"],
                                      fig("threshold.png"))
            suspects = next((f.evidence["top"] for f in findings if f.id == "label_errors"), None)
            if suspects:
                plots.label_errors(suspects, ds, fig("label_errors.png"))
        elif ds.task == "segmentation":
            plots.confusion_matrix(summary["tables"]["test"]["confusion_matrix"], ds.class_names,
                                   fig("confusion_matrix.png"))
            plots.segmentation_samples(ds.X[data.indices["test"]], data.raw_y["test"], preds["test"].argmax(1),
                                       ds.class_names, fig("segmentation.png"))
            _write_segmentation_predictions(run_dir / "predictions_test.csv", data.indices["test"],
                                            data.raw_y["test"], preds["test"].argmax(1), ds.class_names)
        elif ds.task == "language_modeling":
            from methodo.evaluate.lm import sample_text

            summary["sample"] = sample_text(model, data.tensors["test"][0][0], ds.vocab, seed=cfg.seed)
            plots.perplexity_bars(summary["metrics"], summary["baselines"], summary.get("extra_baselines", {}),
                                  fig("perplexity.png"))
        else:
            plots.regression_fit(preds["test"], data.raw_y["test"], fig("regression_fit.png"))
        if data.augment is not None:  # the augmentation gallery: training images beside augmented copies
            gallery(ds, data.indices["train"], cfg.data.augment, seed=cfg.seed, path=fig("augmentation.png"))
        if ds.task in ("classification", "regression"):
            _write_predictions(run_dir / "predictions_test.csv", data.indices["test"], data.raw_y["test"],
                               preds["test"], ds.class_names)

        # 8. Explanations of the test predictions (captum): an image gallery or ranked features.
        if cfg.explain.enabled:
            summary["explain"] = _explain(model, data, ds, cfg, preds["test"], safe_child(run_dir, "figures"))
        return close("finished", "FINISHED")
    except BaseException as exc:
        if summary["status"] == "running":  # not closed yet (the divergence branch closes itself)
            summary["failure"] = f"{type(exc).__name__}: {exc}"
            killed = isinstance(exc, (KeyboardInterrupt, Terminated))
            try:
                close("failed", "KILLED" if killed else "FAILED")
            except Exception:  # the original error matters more than a failed report
                pass
        raise
    finally:
        signals.restore(previous_sigterm)


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
            X, Y = data.tensors[split]
            p = ensemble_predict(model, weights, X, task=ds.task, batch_size=cfg.train.eval_batch_size,
                                 inverse_y=inv, y=Y if ds.task == "language_modeling" else None)
            if ds.task == "segmentation":  # averaged pixel probabilities → the decided class
                p = p.argmax(1)
            metrics[split] = compute_metrics(ds.task, p, data.raw_y[split], _n_classes(ds))
        out[name] = {"members": len(weights), **info, "metrics": metrics}
    return out


def _n_classes(ds) -> int:
    """Classes per row or pixel; for language modeling the vocabulary size (0 for regression)."""
    return ds.n_classes or len(ds.vocab or [])


def _explain(model, data, ds, cfg, test_probs, figs: Path) -> dict:
    """The report's explanations: attributions for test images, or feature importance for tables."""
    from methodo.explain.report import image_gallery, tabular_importance

    if ds.task not in ("classification", "regression"):
        return {"skipped": f"explanations are drawn for classification and regression only (task: {ds.task})"}
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


def _mean_std(values: list) -> tuple[float | None, float | None]:
    import numpy as np

    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def _run_kfold(cfg: Config, *, out: str | Path | None) -> RunResult:
    """k runs, fold i as the test split of run i (``folds/fold-i``); the summary holds the mean of
    every metric over folds in ``metrics`` and the spread in ``metrics_std`` and ``kfold``."""
    from methodo.report.html import render_report
    from methodo.track import make_tracker

    from methodo.data import load_dataset, split_dataset

    t_start = time.perf_counter()
    k = cfg.data.split.folds
    ds = load_dataset(cfg.data)  # bad data or folds fail here, before anything is written
    for i in range(1, k + 1):
        split_dataset(ds, cfg.data, cfg.seed, fold=i)
    del ds
    run_dir = _new_run_dir(out, cfg.name)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    tracker = make_tracker(cfg.track, cfg.name)
    summary: dict[str, Any] = {
        "status": "running", "name": cfg.name, "task": cfg.task, "dataset": cfg.data.source, "seed": cfg.seed,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")), "metrics": {}, "metrics_std": {}, "baselines": {},
        "findings": [], "epochs_run": 0, "best_epoch": None, "duration_s": 0.0, "mlflow_run_id": None,
        "versions": _versions(), "git_commit": _git_commit(), "resumed": False,
        "kfold": {"folds": k, "runs": []},
    }
    tracker.start(flat_params(cfg), {"methodo.run_dir": str(run_dir.resolve()), "methodo.run_name": run_dir.name,
                                     "methodo.dataset": cfg.data.source, "methodo.kfold": str(k)})
    summary["mlflow_run_id"] = tracker.run_id
    _write_json(run_dir / "summary.json", summary)
    fold_summaries = []
    try:
        for i in range(1, k + 1):
            split = cfg.data.split.model_copy(update={"fold": i})
            sub = cfg.model_copy(update={
                "name": f"{cfg.name}-fold{i}", "data": cfg.data.model_copy(update={"split": split}),
                "track": cfg.track.model_copy(update={"mlflow": False}),  # the parent run tracks the folds
            })
            if cfg.train.progress:
                import sys

                print(f"fold {i}/{k}", file=sys.stderr, flush=True)
            res = run(sub, out=run_dir / "folds" / f"fold-{i}")
            fold_summaries.append(res.summary)
            summary["kfold"]["runs"].append({"fold": i, "run_dir": f"folds/fold-{i}", "status": res.status,
                                             "epochs_run": res.summary["epochs_run"],
                                             "best_epoch": res.summary["best_epoch"],
                                             "metrics": res.summary["metrics"]})
            tracker.log_metrics({f"fold{i}_test_{m}": v for m, v in res.summary["metrics"]["test"].items()})
            _write_json(run_dir / "summary.json", summary)
        first = fold_summaries[0]
        summary["task"] = first["task"]
        summary["dataset"] = first["dataset"]
        summary["data"] = first.get("data", {})
        for split in ("train", "val", "test"):
            names = list(first["metrics"][split])
            mean_std = {m: _mean_std([f["metrics"][split].get(m) for f in fold_summaries]) for m in names}
            summary["metrics"][split] = {m: v[0] for m, v in mean_std.items()}
            summary["metrics_std"][split] = {m: v[1] for m, v in mean_std.items()}
        for strategy in first["baselines"]:
            summary["baselines"][strategy] = {
                m: _mean_std([f["baselines"][strategy].get(m) for f in fold_summaries])[0]
                for m in first["baselines"][strategy]}
        summary["kfold"]["mean"] = summary["metrics"]["test"]
        summary["kfold"]["std"] = summary["metrics_std"]["test"]
        from methodo.diagnose import SEVERITY_ORDER

        # each finding once: its most severe occurrence, with the folds it came from
        found = [(SEVERITY_ORDER.get(x["severity"], 9), i, x) for i, f in enumerate(fold_summaries, 1)
                 for x in f["findings"]]
        seen = set()
        for _, i, x in sorted(found, key=lambda t: (t[0], t[1])):
            if x["id"] in seen:
                continue
            seen.add(x["id"])
            folds = [j for j, g in enumerate(fold_summaries, 1) if any(y["id"] == x["id"] for y in g["findings"])]
            summary["findings"].append({**x, "title": f"{x['title']} (fold {i}; found in folds "
                                                      f"{', '.join(map(str, folds))})"})
        summary["epochs_run"] = int(sum(f["epochs_run"] for f in fold_summaries))
        from methodo.report import plots

        keys = {"classification": ["accuracy", "balanced_accuracy", "f1_macro"], "regression": ["r2", "mae", "rmse"]
                }.get(summary["task"], list(first["metrics"]["test"])[:3])
        plots.kfold_metrics(summary["kfold"]["runs"], run_dir / "figures" / "kfold.png",
                            metrics=[m for m in keys if m in first["metrics"]["test"]])
        tracker.log_metrics({f"test_{m}": v for m, v in summary["metrics"]["test"].items()})
        tracker.log_metrics({f"test_{m}_std": v for m, v in summary["metrics_std"]["test"].items()})
    except BaseException as exc:
        summary["failure"] = f"{type(exc).__name__}: {exc}"
        summary["status"] = "failed"
        summary["duration_s"] = round(time.perf_counter() - t_start, 3)
        _write_json(run_dir / "summary.json", summary)
        try:
            render_report(run_dir)
        finally:
            tracker.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", run_dir)
        raise
    summary["status"] = "finished"
    summary["duration_s"] = round(time.perf_counter() - t_start, 3)
    _write_json(run_dir / "summary.json", summary)
    render_report(run_dir)
    tracker.finish("FINISHED", run_dir)
    return RunResult(run_dir, summary)


def _data_stage_summary(cfg: Config, data) -> dict:
    """What the data stage did, for ``summary.json``: balancing, features, augmentation."""
    out: dict[str, Any] = {"balance": cfg.data.balance}
    if data.class_weights is not None:
        out["class_weights"] = {c: round(float(w), 6) for c, w in zip(data.dataset.class_names, data.class_weights)}
    if data.dataset.kind == "tabular":
        out["features"] = {"steps": cfg.data.features, "names": data.feature_names, "n": len(data.feature_names)}
    if cfg.data.augment:
        out["augment"] = cfg.data.augment
    return out


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
