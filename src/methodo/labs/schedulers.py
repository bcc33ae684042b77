"""Lab `schedulers`: the course's learning-rate schedules — step, warmup, cyclic, one-cycle, cosine with warm
restarts — through methodo's own ``train.scheduler``, beside a constant learning rate. One small network on
scikit-learn's digits is trained six times by methodo's training loop, everything equal (data, split, initial
weights, batch order, SGD with momentum 0.9, the same peak learning rate 0.3, the same 12-epoch budget) except
``train.scheduler``. The lab plots the learning rate the loop *applied* at every step (``TrainResult.lrs``), checks
each curve against its definition, and measures the validation accuracy per epoch and the epochs each schedule
needs to reach a target accuracy (98 % of the best accuracy any of them reached).

The course's claim is L. Smith's "one cycle is enough" (super-convergence): one-cycle reaches the target in fewer
epochs. Smith showed it on residual networks with batch normalization, trained for thousands of steps with a peak
learning rate far above the usual one. On this small network it does not appear: at a shared peak learning rate
every schedule reaches about the same accuracy, and one-cycle, whose warmup starts at 1/25 of the peak, is slower
in the first epochs. The lab says what it measures, on every seed: the ranking in epochs-to-target is reported,
not asserted."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

EPOCHS = 12
PEAK = 0.3  # the peak (or constant) learning rate of every schedule
FRACTION = 0.98  # the target: this fraction of the best validation accuracy reached by any schedule
STEP_SIZE, GAMMA = 6, 0.1
WARMUP_EPOCHS, START_FACTOR = 2, 0.01
T_0 = 4
DIV, FINAL_DIV, PCT = 25.0, 1e4, 0.3
SCHEDULES = {
    "constant": {"name": "none"},
    "step": {"name": "step", "step_size": STEP_SIZE, "gamma": GAMMA},
    "warmup": {"name": "none", "warmup_epochs": WARMUP_EPOCHS, "warmup_start_factor": START_FACTOR},
    "cyclic": {"name": "cyclic"},  # base_lr = peak / 10, a half-cycle of 2 epochs (methodo's defaults)
    "onecycle": {"name": "onecycle", "max_lr": PEAK, "pct_start": PCT, "div_factor": DIV,
                 "final_div_factor": FINAL_DIV},
    "cosine_restarts": {"name": "cosine_restarts", "T_0": T_0},
}


def _first(values, target):
    """The first epoch (1-based) whose value reaches ``target``; None if none does."""
    return next((i + 1 for i, v in enumerate(values) if v >= target), None)


@step
def train_all(ctx: LabContext):
    """**Train six times, only `train.scheduler` changes.** `mlp` with one hidden layer of 64 units on `digits`
    (1797 8×8 images, a stratified 60/20/20 split), SGD with momentum 0.9, batches of 64 (17 optimizer steps per
    epoch), 12 epochs, no early stopping; the learning rate (the peak, for the schedules that move it) is 0.3
    for all. The schedules, as `train.scheduler` configs:

    - `constant`: `{name: none}` (the reference);
    - `step`: `{name: step, step_size: 6, gamma: 0.1}`: ×0.1 after 6 epochs;
    - `warmup`: `{name: none, warmup_epochs: 2}`: linear warmup from 1 % of the LR over 2 epochs, then constant;
    - `cyclic`: `{name: cyclic}`: triangular cycles between LR/10 and the LR, 2 epochs up, 2 down (momentum
      cycles the opposite way);
    - `onecycle`: `{name: onecycle, max_lr: 0.3}`: from max_lr/25 up to max_lr over 30 % of the steps, then a
      cosine down to max_lr/25/10⁴ (momentum from 0.95 down to 0.85 and back);
    - `cosine_restarts`: `{name: cosine_restarts, T_0: 4}`: a cosine from the LR to 0 every 4 epochs (SGDR).

    The loop records the learning rate of every optimizer step and the validation accuracy of every epoch."""
    curves, lrs = {}, {}
    for name, sched in SCHEDULES.items():
        _, res = ctx.train(name, {
            "data": {"source": "digits", "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
            "model": {"name": "mlp", "hidden": [64], "dropout": 0.0},
            "train": {"epochs": EPOCHS, "batch_size": 64, "early_stopping": None, "monitor": {"enabled": False},
                      "optimizer": {"name": "sgd", "lr": PEAK, "momentum": 0.9}, "scheduler": sched}})
        curves[name] = [r["val_accuracy"] for r in res.history]
        lrs[name] = np.asarray(res.lrs, dtype=float)
    ctx.state["lrs"] = lrs
    steps = len(lrs["constant"])
    return ctx.record(epochs=EPOCHS, peak_lr=PEAK, steps=steps, steps_per_epoch=steps // EPOCHS,
                      val_accuracy=curves)


@step
def check_lr_curves(ctx: LabContext):
    """**The learning rate the loop applied, against each schedule's definition.** From the per-step learning
    rates: constant stays at 0.3; step is 0.3 for 6 epochs then 0.03; warmup rises linearly from 0.003 to 0.3
    over its first 2 epochs, then stays; cyclic stays between 0.03 and 0.3 and touches both; one-cycle starts at
    0.3/25, peaks at 0.3 (to within 0.1 %: the step nearest the peak) after 30 % of the steps and ends near
    0.3/25/10⁴; cosine restarts is back at 0.3 at the first step of every 4-epoch cycle and near 0 on the step
    before."""
    lrs, spe = ctx.state["lrs"], ctx.numbers["steps_per_epoch"]
    close = lambda a, b: bool(np.allclose(a, b, rtol=1e-6, atol=0))  # noqa: E731
    c, s, w, cy, oc, cr = (lrs[k] for k in SCHEDULES)
    ws = WARMUP_EPOCHS * spe
    restarts = list(range(0, len(cr), T_0 * spe))
    peak_at = int(np.argmax(oc))
    out = {
        "constant": close(c, PEAK),
        "step": close(s[:STEP_SIZE * spe], PEAK) and close(s[STEP_SIZE * spe:], PEAK * GAMMA),
        "warmup": close(w[0], PEAK * START_FACTOR) and bool(np.all(np.diff(w[:ws + 1]) > 0))
        and close(w[ws:], PEAK),
        "cyclic": bool(cy.min() >= PEAK / 10 * (1 - 1e-6) and cy.max() <= PEAK * (1 + 1e-6))
        and close(cy.min(), PEAK / 10) and close(cy.max(), PEAK),
        "onecycle": close(oc[0], PEAK / DIV) and abs(oc.max() / PEAK - 1) < 1e-3 and abs(peak_at / len(oc) - PCT) < 0.02
        and bool(oc[-1] < PEAK / DIV / 100),
        "cosine_restarts": close(cr[restarts], PEAK) and bool(np.all(cr[[r - 1 for r in restarts[1:]]] < 0.01 * PEAK)),
    }
    return ctx.record(lr_curve_as_defined=out, onecycle_peak_step=peak_at, onecycle_last_lr=float(oc[-1]),
                      cosine_restart_steps=restarts)


@step
def epochs_to_target(ctx: LabContext):
    """**Epochs to the target.** The target is 98 % of the best validation accuracy any schedule reached; for each
    schedule, the first epoch at which its validation accuracy reaches it (none if it never does), and its
    accuracy after the first epoch and at the end."""
    acc = ctx.numbers["val_accuracy"]
    best = max(max(v) for v in acc.values())
    target = FRACTION * best
    table = {k: {"epochs_to_target": _first(v, target), "first_epoch_accuracy": v[0], "final_accuracy": v[-1],
                 "best_accuracy": max(v)} for k, v in acc.items()}
    reached = {k: t["epochs_to_target"] for k, t in table.items() if t["epochs_to_target"] is not None}
    fastest = min(reached.values()) if reached else None
    return ctx.record(best_accuracy=best, target_accuracy=target, table=table,
                      fastest=sorted(k for k, e in reached.items() if e == fastest))


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the learning rate of every optimizer step, one panel per schedule (epoch boundaries
    dotted). Right: the validation accuracy per epoch, the target as a dashed line, and where each schedule
    first reaches it."""
    import matplotlib.pyplot as plt

    n, lrs = ctx.numbers, ctx.state["lrs"]
    colors = {"constant": "#444444", "step": "#4477aa", "warmup": "#228833", "cyclic": "#ccbb44",
              "onecycle": "#ee6677", "cosine_restarts": "#aa3377"}
    fig = plt.figure(figsize=(12, 4.6))
    grid = fig.add_gridspec(3, 4, width_ratios=[1, 1, 0.15, 2.2])
    spe = n["steps_per_epoch"]
    for i, name in enumerate(SCHEDULES):
        ax = fig.add_subplot(grid[i // 2, i % 2])
        x = np.arange(1, len(lrs[name]) + 1) / spe
        ax.plot(x, lrs[name], c=colors[name], lw=1.2)
        ax.set_title(name, fontsize=8, pad=2)
        ax.set_ylim(0, PEAK * 1.1)
        ax.tick_params(labelsize=7)
        for e in range(1, EPOCHS):
            ax.axvline(e, c="#dddddd", lw=0.5, ls=":")
        if i // 2 == 2:
            ax.set_xlabel("epoch", fontsize=7)
        if i % 2 == 0:
            ax.set_ylabel("LR", fontsize=7)
    ax = fig.add_subplot(grid[:, 3])
    epochs = np.arange(1, EPOCHS + 1)
    for name, v in n["val_accuracy"].items():
        e = n["table"][name]["epochs_to_target"]
        ax.plot(epochs, v, c=colors[name], lw=1.4, marker=".", label=f"{name}: {e if e else '—'}")
        if e:
            ax.plot([e], [v[e - 1]], "o", mfc="none", mec=colors[name], ms=10)
    ax.axhline(n["target_accuracy"], c="k", ls="--", lw=1)
    ax.text(EPOCHS, n["target_accuracy"], f"target {n['target_accuracy']:.3f}", ha="right", va="bottom", fontsize=8)
    ax.set_ylim(max(0.5, min(min(v) for v in n["val_accuracy"].values()) - 0.02), 1.0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=8, title="epochs to target", title_fontsize=8, loc="lower right")
    fig.tight_layout()
    ctx.figure(fig, "schedulers")


def conclude(ctx: LabContext):
    n = ctx.numbers
    t = n["table"]
    ok = n["lr_curve_as_defined"]
    oc = t["onecycle"]
    others = {k: v["epochs_to_target"] for k, v in t.items() if k != "onecycle"}
    finals = [v["final_accuracy"] for v in t.values()]
    checks = {
        "every LR curve the loop applied matches its schedule's definition": all(ok.values()),
        "every schedule learns (final validation accuracy ≥ 0.93)": min(finals) >= 0.93,
        "one-cycle reaches the target within the budget": oc["epochs_to_target"] is not None,
        "one-cycle's warmup (from LR/25) makes its first epoch slower than the constant LR's":
            oc["first_epoch_accuracy"] < t["constant"]["first_epoch_accuracy"],
    }
    e1 = oc["epochs_to_target"]
    sooner = sorted(k for k, e in others.items() if e is not None and (e1 is None or e < e1))
    same = sorted(k for k, e in others.items() if e is not None and e1 is not None and e == e1)
    ran = ", ".join(f"{k} {v['epochs_to_target'] if v['epochs_to_target'] else 'never'}" for k, v in t.items())
    if e1 is not None and not sooner and not same:
        verdict = "so one cycle reached it in fewer epochs than every other schedule"
    elif e1 is not None and not sooner:
        verdict = f"so one-cycle tied the fastest ({', '.join(same)})"
    else:
        verdict = (f"so one-cycle was not the fastest: {len(sooner)} of {len(others)} schedules got there sooner "
                   f"({', '.join(sooner)})")
    bad = [k for k, v in ok.items() if not v]
    curves = ("every learning-rate curve is as its schedule defines it" if not bad else
              f"the learning-rate curves of {', '.join(bad)} differ from their definition")
    sentence = (f"At the same peak learning rate {PEAK} and {EPOCHS} epochs, {curves}; the target "
                f"({100 * FRACTION:.0f} % of the best validation accuracy, {n['target_accuracy']:.3f}) is reached "
                f"after: {ran} epochs, {verdict}; the final accuracies "
                f"range from {min(finals):.3f} to {max(finals):.3f}, and one-cycle's first epoch (warming up from "
                f"LR/25) ends at {oc['first_epoch_accuracy']:.3f} against {t['constant']['first_epoch_accuracy']:.3f} "
                f"at a constant LR.")
    return sentence, checks


LAB = Lab("schedulers", "Learning-rate schedules: step, warmup, cyclic, one-cycle, cosine restarts",
          "Each learning-rate schedule of train.scheduler applies the LR curve it defines; at a shared peak LR and "
          "budget, how many epochs each needs to reach a target accuracy (the course: one-cycle needs fewer).",
          (train_all, check_lr_curves, epochs_to_target, plot), conclude,
          intro="The course's schedules, each one `train.scheduler` config, on the same network, data, "
                "initialization and peak learning rate: the learning rate the loop applied at every step, and the "
                "epochs each needs to reach a target accuracy. L. Smith's \"one cycle is enough\" "
                "(super-convergence) was shown on residual networks with batch normalization over thousands of "
                "steps; this lab measures what happens on a small network in 200 steps.")
