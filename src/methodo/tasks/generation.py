"""Generation: learn to make new images like the training ones (a diffusion model, ``ddpm``).

Training is denoising: the model's output is ``(N, 2, C, H, W)`` — its predicted noise and the noise it
drew (``methodo.models.diffusion``) — and the loss is their mean squared difference (the DDPM "simple"
loss); the epoch score and the per-row metric are that MSE (``noise_mse``; always predicting zero noise
scores E[ε²] = 1, the dummy baseline).

The denoising loss says little about the images, so the outputs step (``write_outputs``) measures
samples, at a scale where that is honest: a methodo ``cnn`` digits classifier is trained on the
training split (a few seconds), then three sets of images are scored the same way —

- ``real_test``: the test images (the reference: what real digits score);
- ``model``: the diffusion model's samples;
- ``gaussian``: samples of a per-pixel Gaussian fitted on the training images (the baseline: right
  mean and variance of every pixel, no structure);

each with ``confidence`` (the classifier's mean top probability: does it look like *some* digit?) and
``class_entropy`` (entropy of the histogram of the decided classes over ln C: 1 = every class equally
often, 0 = one class only; do the samples cover the classes?), with percentile bootstrap intervals over
the images, and the classifier's accuracy on the real test images. Figures: the reverse chain
x_T → x_0 of a few samples (``diffusion_chain.png``), a grid of samples after every few epochs
(``samples_epoch_NNN.png``, same noise each time) and at the end beside real and Gaussian images
(``samples.png``). Datasets of classification images serve this task (``data_tasks``): the labels
only train the scoring classifier and keep the split stratified.
"""

from __future__ import annotations

import math

from methodo.tasks.base import TASKS, TaskSpec

SAMPLES = 200  # images of each set scored (model, Gaussian); the real set is the whole test split
GRID = 16  # images per sample grid
CHAIN_ROWS, CHAIN_STEPS = 4, 9  # the reverse chain: samples × states shown
GRIDS = 3  # sample grids written during training (every epochs / GRIDS epochs, and the last)


def _mse(out, y=None, class_weights=None, label_smoothing=0.0):
    import torch.nn.functional as F

    return F.mse_loss(out[:, 0], out[:, 1])


def _row_mse(out, y=None):
    d = out[:, 0] - out[:, 1]
    return (d * d).flatten(1).mean(1)


def _sq_error(out, y=None, y_std=1.0):  # per image: every image has the same number of values
    return _row_mse(out).sum(), len(out)


def _baselines(y_train, y_eval, n_classes, seed):
    # ε̂ = 0 for every row: its squared error is ε², whose expectation under N(0, I) is exactly 1
    return {"zero_noise": {"noise_mse": 1.0}}


# ----------------------------------------------------------------- scoring samples with a classifier


CLASSIFIER = {"width": 16, "epochs": 8, "batch_size": 64, "lr": 3e-3}  # the scoring cnn: a few seconds


def train_classifier(X, y, n_classes: int, *, seed: int, width: int = 16, epochs: int = 8, batch_size: int = 64,
                     lr: float = 3e-3):
    """A methodo ``cnn`` trained on ``(X, y)`` (Adam, a fixed number of epochs), in eval mode."""
    import torch

    from methodo.models import build_model
    from methodo.seed import generator

    g = generator(seed, offset=181)
    with torch.random.fork_rng(devices=[]):  # leaves the run's global generator where it was
        torch.manual_seed(seed + 181)
        net = build_model("cnn", input_shape=tuple(X.shape[1:]), n_outputs=n_classes, kind="image",
                          task="classification", width=width)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        X, y = torch.as_tensor(X), torch.as_tensor(y, dtype=torch.long)
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(X), generator=g)
            for s in range(0, len(X) - 1, batch_size):
                idx = perm[s:s + batch_size]
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(X[idx]), y[idx]).backward()
                opt.step()
    return net.eval()


def _entropy(pred, n_classes: int) -> float:
    import numpy as np

    p = np.bincount(pred, minlength=n_classes) / max(len(pred), 1)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / math.log(n_classes))


def score_images(classifier, X, n_classes: int, *, seed: int, y=None, n_boot: int = 200,
                 level: float = 0.95) -> dict:
    """``confidence`` and ``class_entropy`` of images ``X`` (the classifier's input units), each with a
    percentile bootstrap interval over the images; ``accuracy`` too when labels ``y`` are given."""
    import numpy as np
    import torch

    with torch.no_grad():
        p = torch.cat([classifier(torch.as_tensor(X[s:s + 512])).softmax(1) for s in range(0, len(X), 512)]).numpy()
    conf, pred = p.max(1), p.argmax(1)
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, len(X), (n_boot, len(X)))
    a = (1 - level) / 2

    def interval(values):
        return [float(np.quantile(values, a)), float(np.quantile(values, 1 - a))]

    out = {"images": int(len(X)), "confidence": float(conf.mean()),
           "class_entropy": _entropy(pred, n_classes),
           "class_counts": np.bincount(pred, minlength=n_classes).tolist(),
           "intervals": {"confidence": interval(conf[boot].mean(1)),
                         "class_entropy": interval([_entropy(pred[b], n_classes) for b in boot])}}
    if y is not None:
        ok = (pred == np.asarray(y)).astype(float)
        out["accuracy"] = float(ok.mean())
        out["intervals"]["accuracy"] = interval(ok[boot].mean(1))
    return out


def gaussian_samples(X_train, n: int, *, seed: int):
    """``n`` images from independent per-pixel Gaussians fitted on ``X_train`` (pixels in [0, 1]), clipped."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mu, sd = X_train.mean(0), X_train.std(0)
    return np.clip(rng.normal(mu, sd, size=(n, *X_train.shape[1:])), 0, 1).astype(np.float32)


# ----------------------------------------------------------------- figures


def _pixels(o):
    """``(to pixels, to model units)`` for the run's data scaling (per-channel standardization or none)."""
    pre = o.data.preprocessor if hasattr(o, "data") else o
    mean, std = pre.mean, pre.std

    def to_units(x):
        return x if mean is None else ((x - mean) / std).astype("float32")

    return mean, std, to_units


def _grid(images, path, *, title: str, cols: int = 8):
    from methodo.report.plots import _plt, _save, _show

    plt = _plt()
    rows = math.ceil(len(images) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img in zip(axes.ravel(), images):
        _show(ax, img)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _chain_figure(chain, path):
    """Rows: samples; columns: x_T (pure noise) → x_0, the states of the reverse Markov chain."""
    from methodo.report.plots import _plt, _save, _show

    plt = _plt()
    rows, cols = chain[0][1].shape[0], len(chain)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.95, rows * 0.95 + 0.5), squeeze=False)
    for j, (t, x) in enumerate(chain):
        for i in range(rows):
            axes[i, j].axis("off")
            _show(axes[i, j], x[i].numpy())
        axes[0, j].set_title(f"t={t}", fontsize=8)
    fig.suptitle("reverse diffusion x_T → x_0 (ancestral sampling, one Markov chain per row)", fontsize=9)
    return _save(fig, path)


def _samples_figure(real, model, gauss, path, scores):
    from methodo.report.plots import _plt, _show

    plt = _plt()
    sets = [("real test", real, scores["real_test"]), ("ddpm samples", model, scores["model"]),
            ("per-pixel Gaussian", gauss, scores["gaussian"])]
    fig, axes = plt.subplots(len(sets), GRID, figsize=(GRID * 0.7, len(sets) * 1.1 + 0.3), squeeze=False)
    for r, (name, imgs, s) in enumerate(sets):
        for c in range(GRID):
            axes[r, c].axis("off")
            _show(axes[r, c], imgs[c])
    fig.tight_layout(h_pad=1.8)
    for r, (name, _, s) in enumerate(sets):  # each set's label above its row, as figure text placed after the
        pos = axes[r, 0].get_position()     # layout: an axis title wider than its axis defeats tight_layout
        fig.text(pos.x0, pos.y1 + 0.01, f"{name}: confidence {s['confidence']:.2f}, "
                 f"class entropy {s['class_entropy']:.2f}", fontsize=8, va="bottom")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _grid_every(epochs: int) -> int:
    return max(1, math.ceil(epochs / GRIDS))


def _on_epoch(prep, rd):
    """After every few epochs (and the last), a grid of samples from the same noise: the model's progress."""
    from methodo.models.diffusion import sample_images

    mean, std, _ = _pixels(prep.data.preprocessor)
    shape = tuple(prep.data.input_shape)
    every, last = _grid_every(prep.cfg.train.epochs), prep.cfg.train.epochs

    def hook(row: dict) -> None:
        e = int(row["epoch"])
        if e % every == 0 or e == last:
            x, _ = sample_images(prep.model, GRID, shape, seed=prep.cfg.seed, mean=mean, std=std)
            _grid(x.numpy(), rd.figure(f"samples_epoch_{e:03d}.png"), title=f"samples after epoch {e}")

    return hook


def _write_outputs(o) -> None:
    """The reverse chain, the final samples beside real and Gaussian ones, and their classifier scores."""
    import numpy as np

    from methodo.models.diffusion import sample_images

    cfg, seed = o.cfg, o.cfg.seed
    mean, std, to_units = _pixels(o)
    shape = tuple(o.data.input_shape)
    _, chain = sample_images(o.model, CHAIN_ROWS, shape, seed=seed + 1, mean=mean, std=std, keep=CHAIN_STEPS)
    _chain_figure(chain, o.rd.figure("diffusion_chain.png"))
    if not o.ds.class_names:
        o.record.generation = {"skipped": "the dataset has no classes to train the scoring classifier on"}
        return
    n_classes = len(o.ds.class_names)
    train_x = o.data.tensors["train"][0].numpy()
    train_y, test_y = o.data.raw_y["train"], o.data.raw_y["test"]
    test_x = o.data.tensors["test"][0].numpy()
    pix = lambda x: np.clip(x * std + mean, 0, 1) if mean is not None else x  # noqa: E731
    clf = train_classifier(train_x, train_y, n_classes, seed=seed, **CLASSIFIER)
    model_x, _ = sample_images(o.model, SAMPLES, shape, seed=seed + 2, mean=mean, std=std)
    gauss_x = gaussian_samples(pix(train_x), SAMPLES, seed=seed + 3)
    kw = dict(seed=seed, n_boot=cfg.evaluate.bootstrap or 200, level=cfg.evaluate.confidence)
    scores = {
        "real_test": score_images(clf, test_x, n_classes, y=test_y, **kw),
        "model": score_images(clf, to_units(model_x.numpy()), n_classes, **kw),
        "gaussian": score_images(clf, to_units(gauss_x), n_classes, **kw),
    }
    o.record.generation = {
        "classifier": {"model": "cnn", "trained_on": "train split", **CLASSIFIER},
        "samples": SAMPLES, "level": cfg.evaluate.confidence, "steps": int(o.model.steps),
        "schedule": o.model.schedule, "scores": scores,
        "baseline": "gaussian: independent per-pixel Gaussians fitted on the training images",
    }
    _samples_figure(pix(test_x), model_x.numpy(), gauss_x, o.rd.figure("samples.png"), scores)


SPEC = TaskSpec(
    name="generation", score="noise_mse", higher_is_better=False, loss=_mse, batch_score=_sq_error,
    n_outputs=lambda ds: int(ds.X.shape[1]), strata=lambda y: y, to_scores=_row_mse, baselines=_baselines,
    decide=None, per_row=False, headline=("noise_mse", -1), write_outputs=_write_outputs, on_epoch=_on_epoch,
    data_tasks=("classification",),
    explain="explanations are drawn for classification and regression only (task: generation)",
    help="new images like the training ones (diffusion): noise-prediction MSE, samples scored by a classifier")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
