"""How fragile the model is: adversarial accuracy (torchattacks) and common corruptions, on the test images.

On a seeded, class-stratified sample of at most ``max_images`` test images (all of them when fewer):

1. **Attacks** (torchattacks, untargeted, against the true labels): ``fgsm`` and ``pgd`` at each L∞ budget
   ``eps`` (pixel units of images in [0, 1]: the run's standardization is handed to torchattacks, which
   attacks in pixel space and returns standardized inputs), and ``onepixel`` (differential evolution
   changing ``k`` pixels, for each ``k`` of ``pixels``, on the first ``onepixel_images`` of the sample).
   For each: the robust accuracy with its Wilson interval, the images fooled (right before, wrong after),
   and the mean confidence of the fooled predictions.
2. **Corruptions** in the manner of CIFAR-10-C (Hendrycks & Dietterich, 2019), with torchvision ops at 5
   severities: Gaussian noise, Gaussian blur, brightness, contrast, JPEG, pixelation. The accuracy per
   corruption and severity; ``mce``, the mean corruption error over corruptions and severities, and
   ``relative_mce``, its excess over the clean error (no reference model is needed for either).
3. The **gallery** of successful adversarial examples: original and fooled prediction with its confidence.

The global RNG states are restored after (the attacks draw random starts and populations), so nothing
that runs later moves. ``methodo robustness RUN_DIR`` runs the same on a finished run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from methodo.errors import BadInput, ConfigError

# severity 1..5 of each corruption (CIFAR-10-C's constants where an op is the same)
SEVERITIES = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],  # noise standard deviation
    "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1.0],  # blur sigma, pixels
    "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],  # added to every pixel
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],  # contrast factor
    "jpeg": [80, 65, 58, 50, 40],  # JPEG quality
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],  # downscale factor, then nearest upscale
}


def check_torchattacks(key: str = "evaluate.robustness") -> None:
    """torchattacks must import (a config error naming ``key`` and how to install it otherwise)."""
    try:
        import torchattacks  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"{key}: needs the torchattacks package ({exc}); install it with "
                          "pip install --no-deps 'torchattacks==3.5.1' (its requests pin conflicts with mlflow's)") from None


def wilson(k: int, n: int, level: float = 0.95) -> list[float] | None:
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def sample(y: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Positions of a seeded class-stratified sample of at most ``cap`` rows (sorted; all when fewer)."""
    from methodo.evaluate.baselines import sample_rows

    return np.sort(sample_rows(len(y), cap, seed=seed, strata=np.asarray(y)))


def _torch_mean_std(pre, X):
    import torch

    if pre is None or pre.mean is None:
        return None, None
    return (torch.as_tensor(pre.mean, dtype=X.dtype).reshape(1, -1, 1, 1),
            torch.as_tensor(pre.std, dtype=X.dtype).reshape(1, -1, 1, 1))


def make_attack(model, name: str, *, eps: float | None = None, pixels: int | None = None, steps: int = 10,
                popsize: int = 10, mean=None, std=None):
    """A torchattacks attack on ``model``; with ``mean``/``std`` it takes and returns standardized inputs
    (the budget stays in pixel units)."""
    import torchattacks

    if name == "fgsm":
        atk = torchattacks.FGSM(model, eps=eps)
    elif name == "pgd":
        atk = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / steps, steps=steps, random_start=True)
    elif name == "onepixel":
        atk = torchattacks.OnePixel(model, pixels=pixels, steps=steps, popsize=popsize, inf_batch=256)
    else:
        raise ValueError(f"unknown attack {name!r}")
    if mean is not None:
        atk.set_normalization_used(mean=mean.reshape(-1).tolist(), std=std.reshape(-1).tolist())
    return atk


def _predict(model, X, batch: int = 512):
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for s in range(0, len(X), batch):
            outs.append(torch.softmax(model(X[s:s + batch]).float(), 1))
    p = torch.cat(outs)
    conf, pred = p.max(1)
    return pred.cpu().numpy(), conf.cpu().numpy()


def _attacked(atk, X, y, batch: int = 256):
    import torch

    return torch.cat([atk(X[s:s + batch], y[s:s + batch]).detach() for s in range(0, len(X), batch)])


# --------------------------------------------------------------------------- corruptions


def corrupt(x01, name: str, severity: int, *, seed: int = 0):
    """``x01`` (N, C, H, W) in [0, 1] under corruption ``name`` at ``severity`` (1..5), in [0, 1]."""
    import torch
    import torch.nn.functional as F
    from torchvision.transforms.v2 import functional as TF

    c = SEVERITIES[name][severity - 1]
    if name == "gaussian_noise":
        g = torch.Generator().manual_seed(seed * 1009 + severity)
        return (x01 + c * torch.randn(x01.shape, generator=g, dtype=x01.dtype)).clamp(0, 1)
    if name == "gaussian_blur":
        k = 2 * math.ceil(3 * c) + 1
        return TF.gaussian_blur(x01, kernel_size=[k, k], sigma=[c, c]).clamp(0, 1)
    if name == "brightness":
        return (x01 + c).clamp(0, 1)
    if name == "contrast":
        mean = x01.mean(dim=(1, 2, 3), keepdim=True)
        return ((x01 - mean) * c + mean).clamp(0, 1)
    if name == "jpeg":
        u8 = (x01 * 255).round().clamp(0, 255).to(torch.uint8)
        return TF.jpeg(u8, quality=int(c)).to(x01.dtype) / 255.0
    if name == "pixelate":
        h, w = x01.shape[-2:]
        # at least one pixel fewer: on small images (8×8 digits) severity 1 would otherwise round to no change
        small = F.interpolate(x01, size=(max(1, min(h - 1, round(h * c))), max(1, min(w - 1, round(w * c)))),
                              mode="area")
        return F.interpolate(small, size=(h, w), mode="nearest")
    raise ValueError(f"unknown corruption {name!r}")


# --------------------------------------------------------------------------- the measurement


def measure(model, X, y, *, rcfg, mean=None, std=None, seed: int = 0, class_names: list[str] | None = None,
            level: float = 0.95, attacks_only: bool = False) -> tuple[dict[str, Any], dict]:
    """``(robustness, gallery)`` of ``model`` on standardized inputs ``X`` (a tensor) with labels ``y``:
    the numbers for ``summary.json`` and the fooled images for the figure (``{"items": [...]}``).
    The RNG states are kept (restored after)."""
    import torch

    from methodo.trust.mitigate import _rng_kept

    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    y_np = y_t.numpy()
    to01 = (lambda t: t * std + mean) if mean is not None else (lambda t: t)
    X01 = to01(X)
    pred0, conf0 = _predict(model, X)
    right0 = pred0 == y_np
    n = len(y_np)
    out: dict[str, Any] = {
        "images": n, "clean_accuracy": round(float(right0.mean()), 4), "clean_interval": wilson(right0.sum(), n, level),
        "clean_confidence": round(float(conf0.mean()), 4), "attacks": {}, "level": level,
        "thresholds": {"collapse": rcfg.collapse, "small_eps": rcfg.small_eps,
                       "corruption_points": rcfg.corruption_points, "confidence": rcfg.confidence},
    }
    gallery: list[dict] = []

    def record(name, budget: dict, adv, rows):
        pred, conf = _predict(model, adv)
        truth, was_right = y_np[rows], right0[rows]
        right = pred == truth
        fooled = was_right & ~right
        row = {**budget, "accuracy": round(float(right.mean()), 4), "interval": wilson(right.sum(), len(rows), level),
               "images": int(len(rows)), "fooled": int(fooled.sum()),
               "fooled_fraction": round(float(fooled.sum() / max(was_right.sum(), 1)), 4),
               "fooled_confidence": round(float(conf[fooled].mean()), 4) if fooled.any() else None}
        out["attacks"].setdefault(name, []).append(row)
        for j in np.flatnonzero(fooled):
            gallery.append({"attack": name, **budget, "row": int(rows[j]), "original": X01[rows[j]].cpu().numpy(),
                            "adversarial": to01(adv[j:j + 1])[0].cpu().numpy(), "true": int(truth[j]),
                            "before": int(pred0[rows[j]]), "before_conf": float(conf0[rows[j]]),
                            "after": int(pred[j]), "after_conf": float(conf[j])})

    with _rng_kept():
        for name in rcfg.attacks:
            if name == "onepixel":
                rows = np.arange(min(n, rcfg.onepixel_images))
                for k in rcfg.pixels:
                    torch.manual_seed(seed)
                    np.random.seed(seed % 2**32)
                    atk = make_attack(model, "onepixel", pixels=k, steps=rcfg.onepixel_steps,
                                      popsize=rcfg.onepixel_popsize * k, mean=mean, std=std)
                    record("onepixel", {"pixels": int(k)}, _attacked(atk, X[rows], y_t[rows]), rows)
                continue
            rows = np.arange(n)
            for eps in rcfg.eps:
                torch.manual_seed(seed)
                atk = make_attack(model, name, eps=eps, steps=rcfg.pgd_steps, mean=mean, std=std)
                record(name, {"eps": round(float(eps), 6)}, _attacked(atk, X, y_t), rows)
    if not attacks_only and rcfg.corruptions:
        x01 = X01.clamp(0, 1)
        acc: dict[str, list[float]] = {}
        for name in rcfg.corruptions:
            for sev in range(1, 6):
                xc = corrupt(x01, name, sev, seed=seed)
                xs = (xc - mean) / std if mean is not None else xc
                acc.setdefault(name, []).append(round(float((_predict(model, xs)[0] == y_np).mean()), 4))
        errors = np.array([[1 - a for a in v] for v in acc.values()])
        clean_err = 1 - out["clean_accuracy"]
        out["corruptions"] = {"severities": SEVERITIES_DOC, "accuracy": acc,
                              "mce": round(float(errors.mean()), 4),
                              "relative_mce": round(float(errors.mean() - clean_err), 4),
                              "clean_error": round(clean_err, 4)}
    gallery.sort(key=lambda g: (g["attack"] != "onepixel", g.get("pixels", 0), g.get("eps", 0), g["row"]))
    picked, seen = [], set()
    for g in gallery:  # one-pixel first (the course's slide), each image once
        if g["row"] not in seen and len(picked) < rcfg.gallery:
            picked.append(g)
            seen.add(g["row"])
    out["gallery"] = [{k: v for k, v in g.items() if k not in ("original", "adversarial")} for g in picked]
    if class_names:
        for g in out["gallery"]:
            g.update(true=class_names[g["true"]], before=class_names[g["before"]], after=class_names[g["after"]])
    return out, {"items": picked, "class_names": class_names}


SEVERITIES_DOC = {"gaussian_noise": "noise std", "gaussian_blur": "sigma (pixels)", "brightness": "added",
                  "contrast": "factor", "jpeg": "quality", "pixelate": "downscale factor"}


def tracked_metrics(rob: dict) -> dict[str, float]:
    """MLflow metrics: robust accuracy per attack and budget, the mean corruption error."""
    out = {"robust_clean_accuracy": rob["clean_accuracy"]}
    for name, rows in rob.get("attacks", {}).items():
        for r in rows:
            budget = f"eps{r['eps']:.4g}" if "eps" in r else f"k{r['pixels']}"
            out[f"robust_{name}_{budget}_accuracy"] = r["accuracy"]
    if rob.get("corruptions"):
        out["corruption_mce"] = rob["corruptions"]["mce"]
    return out


# --------------------------------------------------------------------------- the pipeline's stage, the command


def _test_sample(X, y, rcfg, seed: int):
    rows = sample(np.asarray(y), rcfg.max_images, seed)
    return rows, X[rows], np.asarray(y)[rows]


def run_robustness(prep, rcfg, *, rd=None) -> dict:
    """``summary.json`` → ``robustness`` for the pipeline's trained model; with ``train.adversarial`` also the
    same measurement (attacks) of the config trained without it, under ``before_adversarial_training``.
    Figures go to ``rd`` when given."""
    from methodo.train.loop import resolve_device

    cfg, data = prep.cfg, prep.data
    device = resolve_device(cfg.train.device)
    X, y = data.tensors["test"][0], data.raw_y["test"]
    rows, Xs, ys = _test_sample(X, y, rcfg, cfg.seed)
    mean, std = _torch_mean_std(data.preprocessor, X)
    prep.model.to(device)
    to = (lambda t: None if t is None else t.to(device))
    rob, gallery = measure(prep.model, Xs.to(device), ys, rcfg=rcfg, mean=to(mean), std=to(std), seed=cfg.seed,
                           class_names=prep.ds.class_names, level=cfg.evaluate.confidence)
    rob["sample"] = {"of": int(len(y)), "seed": cfg.seed, "max_images": rcfg.max_images}
    if cfg.train.adversarial is not None:
        from methodo.trust.mitigate import _retrain

        plain = prep.cfg.model_copy(update={"train": cfg.train.model_copy(update={"adversarial": None})})
        base = _retrain(type(prep)(plain, prep.ds, prep.data, prep.model, prep.spec), data)
        base.to(device)
        before, _ = measure(base, Xs.to(device), ys, rcfg=rcfg, mean=to(mean), std=to(std), seed=cfg.seed,
                            class_names=prep.ds.class_names, level=cfg.evaluate.confidence)
        before.pop("gallery", None)
        rob["before_adversarial_training"] = before
        rob["adversarial_training"] = cfg.train.adversarial.model_dump()
    if rd is not None:
        write_figures(rob, gallery, rd)
    return rob


def write_figures(rob: dict, gallery: dict, rd) -> None:
    from methodo.trust.report import corruption_figure, gallery_figure, robustness_figure

    robustness_figure(rob, rd.figure("robustness.png"))
    if rob.get("corruptions"):
        corruption_figure(rob, rd.figure("corruptions.png"))
    if gallery["items"]:
        gallery_figure(gallery, rd.figure("adversarial.png"))


def robustness_command(run_dir, out=None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict, Any]:
    """``methodo robustness RUN_DIR [--out DIR]``: rebuild the run's test split with its saved transforms, load
    its best weights, measure (``evaluate.robustness`` of the run's config, or the defaults, with
    ``overrides`` such as ``evaluate.robustness.eps=[0.1]``). Without ``--out`` the results join the run
    (``robustness.json``, figures, ``summary.json`` → ``robustness``, the report re-rendered); with ``--out`` they
    go to that new folder and the run is left as it was. Returns ``(robustness, the folder written)``."""
    import torch

    from methodo.config import RobustnessConfig, load_config
    from methodo.rundir import RunDir

    rd = RunDir.open(run_dir, needs="config")
    cfg = load_config(rd.file("config.yaml"))
    if cfg.data.split.method == "kfold" and cfg.data.split.fold is None:
        raise BadInput(f"{rd.path}: a k-fold run has one model per fold; measure one: {rd.path}/folds/fold-1")
    if not rd.has("checkpoints/best.safetensors"):
        raise BadInput(f"{rd.path}: no checkpoints/best.safetensors (did the run finish?)")
    data = cfg.model_dump(mode="json")
    data["evaluate"]["robustness"] = data["evaluate"].get("robustness") or {}
    from methodo.config import apply_overrides, validate

    origin = apply_overrides(data, list(overrides))
    full = validate(data, source=str(rd.file("config.yaml")), origin=origin)
    rcfg = full.evaluate.robustness or RobustnessConfig()
    check_torchattacks("methodo robustness")
    threads = torch.get_num_threads()
    if full.train.threads:  # train.threads=1: small images on a busy machine attack faster on one thread
        torch.set_num_threads(full.train.threads)
    try:
        return _measure_run(rd, cfg, rcfg, out)
    finally:
        torch.set_num_threads(threads)


def _measure_run(rd, cfg, rcfg, out) -> tuple[dict, Any]:
    import torch

    from methodo.data.preprocess import Preprocessor
    from methodo.evaluate.embeddings import _test_inputs
    from methodo.models import build_model
    from methodo.rundir import RunDir
    from methodo.train.checkpoint import load_checkpoint

    ds, rows, X = _test_inputs(rd, cfg)
    if not (ds.kind == "image" and ds.task == "classification"):
        raise BadInput(f"{rd.path}: adversarial attacks and corruptions work on image classification; this run is "
                       f"{ds.kind} {ds.task}")
    model = build_model(cfg.model.name, input_shape=tuple(X.shape[1:]), n_outputs=ds.n_classes, kind=ds.kind,
                        task=ds.task, **cfg.model.options)
    model.load_state_dict(load_checkpoint(rd.file("checkpoints/best.safetensors"))[0])
    pre = Preprocessor.from_json(rd.read_text("preprocessor.json"))
    y = ds.y[rows]
    pick, Xs, ys = _test_sample(X, y, rcfg, cfg.seed)
    mean, std = _torch_mean_std(pre, X)
    with torch.random.fork_rng():
        rob, gallery = measure(model, Xs, ys, rcfg=rcfg, mean=mean, std=std, seed=cfg.seed,
                               class_names=ds.class_names, level=cfg.evaluate.confidence)
    rob["sample"] = {"of": int(len(y)), "seed": cfg.seed, "max_images": rcfg.max_images}
    if out is not None:
        dest = RunDir.create(out, name=cfg.name, kind="robustness", flag="--out")
        dest.make_layout()
        dest.write_json("robustness.json", rob)
        write_figures(rob, gallery, dest)
        return rob, dest.path
    rd.make_layout()
    rd.write_json("robustness.json", rob)
    write_figures(rob, gallery, rd)
    record = rd.read_record()
    record.robustness = rob
    from methodo.record import FindingRecord
    from methodo.trust.findings import trust_findings

    kept = [f for f in record.findings if f.id not in ("not_robust", "corruption_sensitive", "overconfident_under_attack")]
    new = [FindingRecord.model_validate(f.to_dict()) for f in trust_findings(None, rob)]
    record.findings = kept + new
    rd.write_record(record)
    from methodo.report.html import render_report

    render_report(rd.path)
    return rob, rd.path
