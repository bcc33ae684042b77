"""Penultimate-layer embeddings of a finished run's test split, projected to 2-D.

``methodo embed RUN_DIR [--method pca|tsne|umap]`` rebuilds the test split exactly as the run
made it (same config and seed; checked against ``predictions_test.csv``), applies the run's saved
transforms without refitting (``features.skops``, ``preprocessor.json``), loads the best weights,
and projects the inputs of the last layer to 2-D. The figure (colored by true class, wrong
predictions ringed) goes to ``figures/embeddings_METHOD.png`` and into the report; the points to
``embeddings_METHOD.csv``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from methodo.errors import BadInput
from methodo.rundir import LAYOUT

METHODS = ("pca", "tsne", "umap")


def penultimate(model, X, *, batch_size: int = 1024):
    """Inputs of the model's last linear layer (``model.embed`` when the model has it)."""
    import torch

    model.eval()
    feats, outs = [], []
    last = None
    if not hasattr(model, "embed"):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise BadInput("embed: the model has no linear output layer to take the embeddings from")
        last = linears[-1]
    captured = []
    handle = last.register_forward_hook(lambda m, i, o: captured.append(i[0].detach())) if last is not None else None
    try:
        with torch.no_grad():
            for s in range(0, len(X), batch_size):
                xb = X[s:s + batch_size]
                if last is None:
                    e = model.embed(xb)
                    outs.append(model.head(e) if hasattr(model, "head") else model(xb))
                    feats.append(e.flatten(1))
                else:
                    outs.append(model(xb))
                    feats.append(captured.pop().flatten(1))
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(feats).float().numpy(), torch.cat(outs).float().numpy()


def project(E: np.ndarray, method: str, *, seed: int = 0) -> np.ndarray:
    """2-D projection of the rows of ``E`` (standardized first)."""
    if method not in METHODS:
        raise BadInput(f"embed --method {method!r}; choose one of {', '.join(map(repr, METHODS))}")
    Z = (E - E.mean(0)) / np.where(E.std(0) > 1e-12, E.std(0), 1.0)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(Z)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (len(Z) - 1) / 3)))
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(Z)
    try:
        import umap
    except ImportError:
        raise BadInput("embed --method umap needs the umap-learn package: pip install umap-learn") from None
    return umap.UMAP(n_components=2, n_neighbors=min(15, len(Z) - 1), random_state=seed, n_jobs=1).fit_transform(Z)


def _test_inputs(rd, cfg):
    """The run's test inputs, rebuilt with its saved (not refitted) transforms, and their labels."""
    import torch

    from methodo.data import load_dataset, split_dataset
    from methodo.data.features import load_pipeline
    from methodo.data.preprocess import Preprocessor

    from methodo.stages import transfer_inputs

    ds, _ = transfer_inputs(cfg, load_dataset(cfg.data))  # raw text: the hf: model's tokenizer
    rows = split_dataset(ds, cfg.data, cfg.seed)["test"]
    if rd.has(LAYOUT["predictions_test"]):
        saved = [int(r["row"]) for r in csv.DictReader(io.StringIO(rd.read_text(LAYOUT["predictions_test"])))]
        if saved != rows.tolist():
            raise BadInput(f"{rd.path}: the test split rebuilt from config.yaml differs from predictions_test.csv "
                           "(the data changed since the run?)")
    X = ds.X[rows]
    if rd.has("features.skops"):
        pipe = load_pipeline(rd.file("features.skops"))
        Xin = X if ds.cat is None else np.concatenate([X.astype(object), ds.cat[rows]], axis=1)
        X = np.asarray(pipe.transform(Xin), dtype=np.float32)
    pre = Preprocessor.from_json(rd.read_text("preprocessor.json"))
    return ds, rows, torch.from_numpy(pre.transform_x(X))


def embed_run(run_dir: str | Path, method: str = "pca") -> dict:
    """Project the test embeddings of the run in ``run_dir``; writes the figure and CSV, re-renders
    the report, and returns ``{figure, csv, n, wrong, method}``."""
    from methodo.config import load_config
    from methodo.report import plots
    from methodo.report.html import render_report
    from methodo.rundir import RunDir

    if method not in METHODS:
        raise BadInput(f"embed --method {method!r}; choose one of {', '.join(map(repr, METHODS))}")
    rd = RunDir.open(run_dir, needs="config")
    run_dir = rd.path
    cfg = load_config(rd.file("config.yaml"))
    if cfg.data.split.method == "kfold" and cfg.data.split.fold is None:
        raise BadInput(f"{run_dir}: a k-fold run has one model per fold; embed one: {run_dir}/folds/fold-1")
    weights_path = rd.file("checkpoints/best.safetensors")
    if not rd.has("checkpoints/best.safetensors"):
        raise BadInput(f"{run_dir}: no checkpoints/best.safetensors (did the run finish?)")
    ds, rows, X = _test_inputs(rd, cfg)
    from methodo.tasks import task_spec

    if not task_spec(ds.task).has_classes:
        raise BadInput(f"{run_dir}: embed colors points by class; this run is a {ds.task} run")
    from methodo.transfer import load_run_model

    del weights_path  # the run's best weights (a LoRA run: its adapter on the pretrained base)
    model = load_run_model(rd, cfg, input_shape=X.shape[1:], n_outputs=ds.n_classes, kind=ds.kind)
    E, out = penultimate(model, X)
    pred = out.argmax(1)
    y = ds.y[rows]
    pts = project(E, method, seed=cfg.seed)
    label = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}[method]
    rd.make_layout()
    fig = plots.embeddings(pts, y, pred, ds.class_names, rd.figure(f"embeddings_{method}.png"),
                           method=label, title=f"{cfg.name}: test embeddings ({E.shape[1]}-d penultimate layer → "
                           f"{label}), {int((pred != y).sum())} of {len(y)} wrong")
    out_csv = rd.write_csv(f"embeddings_{method}.csv", ["row", "true", "predicted", "x", "y"],
                           ([int(r), ds.class_names[int(t)], ds.class_names[int(p)], f"{a:.6g}", f"{b:.6g}"]
                            for r, t, p, (a, b) in zip(rows, y, pred, pts)))
    render_report(run_dir)
    return {"figure": fig, "csv": out_csv, "n": int(len(y)), "wrong": int((pred != y).sum()), "method": method,
            "dim": int(E.shape[1])}
