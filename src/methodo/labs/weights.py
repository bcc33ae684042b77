"""Lab `weights`: what the weight distributions of a training tell, read from methodo's weight monitoring
(``train.monitor``: per layer and per epoch, the quantiles and the RMS of the weights, as ``monitor.json``
holds them). The same network on scikit-learn's digits is trained three times by methodo's training loop: a
converging run (SGD, learning rate 0.05), the same with an L2 penalty, and a diverging one (learning rate 0.4:
the loss jumps around and never settles, without going far enough for the loop's guard to stop it).

The course says the weights of a converging run narrow toward 0 while a diverging run's spread grows. Measured
here, per layer and per epoch: the diverging run's weights spread out by one to two orders of magnitude in a few
epochs (then freeze when its ReLU units die); the converging run's spread grows too, but by at most about 3× and
settles; it narrows toward 0 only where a penalty pulls it there (L2: the hidden layers' interquartile range
shrinks by about 40 %, while the output layer still widens)."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

EPOCHS = 12
RUNS = {
    "converging": {"lr": 0.05, "regularization": {}},
    "converging_l2": {"lr": 0.05, "regularization": {"l2": 1e-2}},
    "diverging": {"lr": 0.4, "regularization": {}},
}
LAYERS = {"body.1.weight": "hidden 1", "body.4.weight": "hidden 2", "head.weight": "output"}
HIDDEN = ("body.1.weight", "body.4.weight")
Q = {"q05": 1, "q25": 2, "median": 3, "q75": 4, "q95": 5}  # positions in the monitor's QUANTILES


@step
def train_all(ctx: LabContext):
    """**Train three times with the weights monitored every epoch.** `mlp` [64, 64] on `digits` (a stratified
    60/20/20 split), SGD with momentum 0.9, batches of 64, 12 epochs, no early stopping,
    `train.monitor: {every: 1}`: before training (epoch 0) and after every epoch the loop records, for each
    weight matrix, the 0/5/25/50/75/95/100 % quantiles of its values and their RMS, and the share of dead ReLU
    units. The runs: `converging` (learning rate 0.05), `converging_l2` (the same with
    `train.regularization.l2: 0.01`) and `diverging` (learning rate 0.4)."""
    out = {}
    for name, run in RUNS.items():
        _, res = ctx.train(name, {
            "data": {"source": "digits", "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
            "model": {"name": "mlp", "hidden": [64, 64], "dropout": 0.0},
            "train": {"epochs": EPOCHS, "batch_size": 64, "early_stopping": None, "monitor": {"every": 1},
                      "optimizer": {"name": "sgd", "lr": run["lr"], "momentum": 0.9},
                      "regularization": run["regularization"]}})
        mon = res.monitor
        layers = {}
        for layer in LAYERS:
            rows = [m["layers"][layer] for m in mon]
            layers[layer] = {"rms": [r["w_rms"] for r in rows],
                             "iqr": [r["w_q"][Q["q75"]] - r["w_q"][Q["q25"]] for r in rows],
                             **{k: [r["w_q"][i] for r in rows] for k, i in Q.items()}}
        out[name] = {"lr": run["lr"], "regularization": run["regularization"],
                     "monitored_epochs": [m["epoch"] for m in mon],
                     "val_loss": [r["val_loss"] for r in res.history],
                     "val_accuracy_last": res.history[-1]["val_accuracy"],
                     "dead_relu_last": mon[-1]["dead_relu"], "layers": layers}
    return ctx.record(epochs=EPOCHS, runs=out)


@step
def spread(ctx: LabContext):
    """**The spread, per layer: where it ends, relative to where it started.** For every run and layer, the RMS
    of the weights (their spread around 0: the weights are centered) and the interquartile range (the width of
    the middle half) after the last epoch, each divided by its value before training; and how much the RMS
    still grew over the last 4 epochs (a run that settled barely moves there)."""
    runs = ctx.numbers["runs"]
    table = {}
    for name, r in runs.items():
        table[name] = {}
        for layer, d in r["layers"].items():
            rms, iqr = d["rms"], d["iqr"]
            table[name][layer] = {"rms_end_over_start": rms[-1] / rms[0], "iqr_end_over_start": iqr[-1] / iqr[0],
                                  "rms_growth_last_4_epochs": rms[-1] / rms[-5],
                                  "rms_peak_over_start": max(rms) / rms[0]}
    last = {name: {layer: r["layers"][layer]["rms"][-1] for layer in LAYERS} for name, r in runs.items()}
    div_over_conv = {layer: last["diverging"][layer] / last["converging"][layer] for layer in LAYERS}
    return ctx.record(spread=table, diverging_over_converging_rms=div_over_conv,
                      val_loss_last={k: r["val_loss"][-1] for k, r in runs.items()})


@step
def plot(ctx: LabContext):
    """**Figure.** The first three panels: the distribution of the second hidden layer's weights per epoch in each
    run (median, the 25–75 % and 5–95 % bands; mind the different scales). The last: the RMS of every layer,
    divided by its value before training, per epoch, on a log scale."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    colors = {"converging": "#4477aa", "converging_l2": "#228833", "diverging": "#cc3311"}
    styles = {"body.1.weight": "-", "body.4.weight": "--", "head.weight": ":"}
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.7))
    layer = "body.4.weight"
    for ax, (name, r) in zip(axes, n["runs"].items()):
        d, x = r["layers"][layer], r["monitored_epochs"]
        ax.fill_between(x, d["q05"], d["q95"], color=colors[name], alpha=0.2, lw=0, label="5–95 %")
        ax.fill_between(x, d["q25"], d["q75"], color=colors[name], alpha=0.45, lw=0, label="25–75 %")
        ax.plot(x, d["median"], c=colors[name], lw=1.2, label="median")
        reg = f", L2 {r['regularization']['l2']:g}" if r["regularization"] else ""
        ax.set_title(f"{name}: lr {r['lr']:g}{reg} ({LAYERS[layer]})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.axhline(0, c="k", lw=0.5)
    axes[0].set_ylabel("weight value")
    axes[0].legend(fontsize=7, loc="upper left")
    ax = axes[3]
    for name, r in n["runs"].items():
        for lay, d in r["layers"].items():
            rms = np.asarray(d["rms"])
            ax.plot(r["monitored_epochs"], rms / rms[0], c=colors[name], ls=styles[lay], lw=1.3,
                    label=f"{name}, {LAYERS[lay]}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMS / RMS before training")
    ax.legend(fontsize=6, ncol=1, loc="upper left")
    fig.tight_layout()
    ctx.figure(fig, "weights")


def conclude(ctx: LabContext):
    n = ctx.numbers
    s, ratio, vl = n["spread"], n["diverging_over_converging_rms"], n["val_loss_last"]
    conv, l2, div = s["converging"], s["converging_l2"], s["diverging"]
    checks = {
        "the diverging run's loss does not settle (last val loss ≥ 5 × the converging run's)":
            vl["diverging"] >= 5 * vl["converging"],
        "the diverging run's spread grows ≥ 5× in every layer":
            min(v["rms_end_over_start"] for v in div.values()) >= 5,
        "and ends ≥ 3× the converging run's, layer by layer": min(ratio.values()) >= 3,
        "the converging run's spread settles (RMS grows < 10 % over the last 4 epochs, every layer)":
            max(v["rms_growth_last_4_epochs"] for v in conv.values()) < 1.1,
        "without a penalty the converging run's hidden layers do not narrow (IQR ends ≥ its start)":
            min(conv[k]["iqr_end_over_start"] for k in HIDDEN) >= 1.0,
        "with L2 the hidden layers narrow toward 0 (IQR ends ≤ 0.7 × its start)":
            max(l2[k]["iqr_end_over_start"] for k in HIDDEN) <= 0.7,
    }

    def span(run, key, layers=LAYERS, digits=2):
        v = [run[k][key] for k in layers]
        return f"{min(v):.{digits}g}–{max(v):.{digits}g}×"

    dead = n["runs"]["diverging"]["dead_relu_last"]
    sentence = (f"Per layer, the diverging run's (lr 0.4) weight RMS ends {span(div, 'rms_end_over_start')} its "
                f"start ({min(ratio.values()):.1f}–{max(ratio.values()):.1f}× the converging run's), its last val "
                f"loss {vl['diverging']:.2f} against {vl['converging']:.3f} (dead ReLU units at the end: "
                f"{', '.join(f'{100 * v:.0f} %' for v in dead.values())}); the converging run's spread grows "
                f"{span(conv, 'rms_end_over_start')} and settles (last 4 epochs "
                f"{span(conv, 'rms_growth_last_4_epochs', digits=3)}), its hidden layers' interquartile range "
                f"{span(conv, 'iqr_end_over_start', HIDDEN)}: it narrows toward 0 only with L2 (hidden layers' IQR "
                f"{span(l2, 'iqr_end_over_start', HIDDEN)}, the output layer's "
                f"{l2['head.weight']['iqr_end_over_start']:.2g}×).")
    return sentence, checks


LAB = Lab("weights", "Weight distributions of a converging and a diverging run",
          "Monitored per layer and epoch, a diverging run's weight spread grows by orders of magnitude while a "
          "converging run's settles within a few times its start; it narrows toward 0 only under a penalty (L2).",
          (train_all, spread, plot), conclude,
          intro="The course suggests watching the weight distributions during training: methodo's monitor "
                "records them per layer (`monitor.json`, the report's weight figure). Here is what they look like "
                "when training converges, when a penalty pulls on them, and when it diverges.")
