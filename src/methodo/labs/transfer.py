"""Lab `transfer`: a pretrained start against a random one when labels are few. Two tables share 30 input
features, of which only a 3-dimensional projection carries any label: task A (3000 rows, 8 classes, every label)
and task B (another 1500 rows, 3 other classes made from the same projection, few labels). An mlp is pretrained
by methodo's training loop on A; its backbone (every weight but the head) is saved as a safetensors file. B is
then learned from 3, 10 and 50 labeled rows per class with the same data, split, epochs and optimizer: from those
weights with the backbone frozen (``transfer.strategy: linear_probe``), from those weights with every weight
trained (``finetune``), and from random weights. The pretrained features already hold the directions that
matter, so a head on them learns B from a few labels; from scratch the network must find 3 directions among 30
from 9 rows. The advantage shrinks as labels grow.

On scikit-learn's digits, the features a small cnn learns on digits 0-4 do not carry to 5-9 in the same way
(``examples/digits_transfer.py``: equal test accuracy with 10 labels per class): transfer pays when the source
task needs the features the target needs, which this lab builds in and states."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

FEATURES, HIDDEN_DIMS = 30, 3
ROWS_A, ROWS_B = 3000, 1500
SHOTS = (3, 10, 50)  # labeled training rows per class of task B
FEW, MANY = SHOTS[0], SHOTS[-1]
VAL_PER_CLASS = 5  # the validation split is few-label too: it chooses the best epoch
HIDDEN = [64, 16]
EPOCHS = 40
STARTS = {"linear_probe": ("linear_probe", 0.03), "finetune": ("finetune", 0.003), "scratch": ("none", 0.003)}


def _write(path, X, y) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(f"x{i}" for i in range(FEATURES)) + ",label\n" + "".join(
        ",".join(f"{v:.5f}" for v in row) + f",c{t}\n" for row, t in zip(X, y)))


def _data(path: str, split: dict) -> dict:
    # the features are standardized by construction: no scaling fitted on a handful of rows, which would
    # feed the pretrained backbone inputs unlike those it was trained on
    return {"source": "csv", "path": path, "target": "label", "scale": "none", "split": split}


@step
def make_data(ctx: LabContext):
    """**Two related tasks.** Rows of 30 standard-normal features; a random orthonormal projection `z = X·W`
    (30 → 3, seeded) holds all the signal. Task A: 3000 rows, 8 balanced classes, the signs of `z₁, z₂, z₃`.
    Task B: 1500 other rows, 3 balanced classes, the 120° sector of the angle of `(z₁, z₂)` (rotated at
    random): another question about the same directions. Each table is written to a CSV file."""
    rng = np.random.default_rng(ctx.seed)
    W = np.linalg.qr(rng.normal(size=(FEATURES, HIDDEN_DIMS)))[0]
    XA, XB = rng.normal(size=(ROWS_A, FEATURES)), rng.normal(size=(ROWS_B, FEATURES))
    za, zb = XA @ W, XB @ W
    ya = 4 * (za[:, 0] > 0) + 2 * (za[:, 1] > 0) + (za[:, 2] > 0)
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
    yb = np.argmax(zb[:, :2] @ np.stack([np.cos(angles), np.sin(angles)]), axis=1)
    for name, X, y in (("a", XA, ya), ("b", XB, yb)):
        path = ctx.run_dir("data") / f"task_{name}.csv"
        _write(path, X, y)
        ctx.state[name] = str(path)
    return ctx.record(features=FEATURES, informative_directions=HIDDEN_DIMS, rows_a=ROWS_A, rows_b=ROWS_B,
                      classes_a=8, classes_b=3, class_shares_b=(np.bincount(yb, minlength=3) / ROWS_B).tolist())


@step
def pretrain(ctx: LabContext):
    """**Pretrain on task A.** An `mlp` [64, 16] trains 15 epochs on 70 % of A (Adam, learning rate 0.003,
    batches of 64). Its weights, **the head left out** (it predicts A's 8 classes), are saved as a safetensors
    file: a pretrained backbone, as a downloaded one would be, but made here."""
    from safetensors.torch import save_file

    from methodo.evaluate.metrics import compute_metrics, predict

    prep, res = ctx.train("pretrain", {
        "data": _data(ctx.state["a"], {"method": "stratified", "val": 0.2, "test": 0.1}),
        "model": {"name": "mlp", "hidden": HIDDEN, "dropout": 0.0},
        "train": {"epochs": 15, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003}, "early_stopping": None}})
    X, y = prep.data.tensors["val"]
    acc = compute_metrics("classification", predict(prep.model, X, task="classification"), y.numpy(), 8,
                          names=["accuracy"])["accuracy"]
    body = {k: v.contiguous() for k, v in prep.model.state_dict().items() if not k.startswith("head.")}
    path = ctx.run_dir("backbone") / "mlp_task_a.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(body, str(path))
    ctx.state["backbone"] = str(path)
    return ctx.record(pretrain={"train_rows": len(prep.data.indices["train"]), "epochs": res.epochs_run,
                                "val_accuracy": acc, "backbone_tensors": len(body),
                                "parameters": int(sum(p.numel() for p in prep.model.parameters()))})


@step
def few_labels(ctx: LabContext):
    """**Task B from a few labels: three starts.** For 3, 10 and 50 labeled training rows per class (a
    stratified split keeps 5 per class for validation and every other row, 1300 or more, for the test), the
    same `mlp` trains 40 epochs (batches of 16, or the 9 rows at once) three times: from the saved backbone, frozen, a new head
    trained on its features (`model.pretrained: FILE`, `transfer.strategy: linear_probe`, Adam at 0.03); from
    the saved backbone with every weight trained (`finetune`, Adam at 0.003); from random weights (Adam at
    0.003). The three share the seed, hence the split and the batches. The kept weights (best epoch by
    validation loss) are scored once on the test rows."""
    from methodo.evaluate.metrics import compute_metrics, predict

    out = {}
    for shots in SHOTS:
        val = 3 * VAL_PER_CLASS / ROWS_B
        split = {"method": "stratified", "val": val, "test": 1 - val - (3 * shots + 0.5) / ROWS_B}
        row = {}
        for start, (strategy, lr) in STARTS.items():
            pretrained = None if start == "scratch" else ctx.state["backbone"]
            prep, res = ctx.train(f"{start}-{shots}", {
                "data": _data(ctx.state["b"], split),
                "model": {"name": "mlp", "hidden": HIDDEN, "dropout": 0.0, "pretrained": pretrained},
                "transfer": {"strategy": strategy},
                "train": {"epochs": EPOCHS, "batch_size": min(16, 3 * shots), "optimizer": {"name": "adam", "lr": lr},
                          "early_stopping": None}})
            X, y = prep.data.tensors["test"]
            acc = compute_metrics("classification", predict(prep.model, X, task="classification"), y.numpy(), 3,
                                  names=["accuracy"])["accuracy"]
            row[start] = {"test_accuracy": acc, "best_epoch": res.best_epoch,
                          "trainable_parameters": prep.plan.info["trainable_parameters"] if prep.plan else
                          int(sum(p.numel() for p in prep.model.parameters()))}
            if pretrained:
                row[start].update(loaded_tensors=prep.plan.pretrained["loaded"],
                                  head_reset=prep.plan.pretrained.get("head_reset", []))
        row.update(train_rows=len(prep.data.indices["train"]), test_rows=len(prep.data.indices["test"]),
                   gain_linear_probe=row["linear_probe"]["test_accuracy"] - row["scratch"]["test_accuracy"],
                   gain_finetune=row["finetune"]["test_accuracy"] - row["scratch"]["test_accuracy"])
        out[str(shots)] = row
    return ctx.record(shots=list(SHOTS), by_shots=out)


@step
def plot(ctx: LabContext):
    """**Figure.** Test accuracy on task B against labeled rows per class, for the three starts: the frozen
    pretrained backbone is far ahead with 3 labels per class and the gap closes as labels grow; fine-tuning
    every weight from a handful of rows is erratic (it may lose what pretraining gave), and catches up later."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    labels = {"linear_probe": "pretrained on A, backbone frozen (linear probe)",
              "finetune": "pretrained on A, every weight fine-tuned", "scratch": "from scratch"}
    for start, c in (("linear_probe", "#228833"), ("finetune", "#4477aa"), ("scratch", "#cc3311")):
        acc = [n["by_shots"][str(k)][start]["test_accuracy"] for k in SHOTS]
        ax.plot(SHOTS, acc, "o-", c=c, label=labels[start])
    ax.axhline(1 / 3, c="0.6", ls=":", lw=1, label="chance (3 classes)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(SHOTS, [str(k) for k in SHOTS])
    ax.set_xlabel("labeled training rows per class (task B)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    ctx.figure(fig, "transfer")


def conclude(ctx: LabContext):
    n = ctx.numbers
    few, many = n["by_shots"][str(FEW)], n["by_shots"][str(MANY)]
    lp = lambda k: n["by_shots"][str(k)]["linear_probe"]["test_accuracy"]  # noqa: E731
    sc = lambda k: n["by_shots"][str(k)]["scratch"]["test_accuracy"]  # noqa: E731
    ft = lambda k: n["by_shots"][str(k)]["finetune"]["test_accuracy"]  # noqa: E731
    checks = {
        f"with {FEW} labels per class, the frozen pretrained backbone beats scratch by ≥ 0.20 test accuracy":
            few["gain_linear_probe"] >= 0.20,
        "it beats scratch at every number of labels (by ≥ 0.05)":
            all(n["by_shots"][str(k)]["gain_linear_probe"] >= 0.05 for k in SHOTS),
        f"the gap closes as labels grow (gain at {MANY} per class < gain at {FEW})":
            many["gain_linear_probe"] < few["gain_linear_probe"],
        f"with {MANY} labels per class, fine-tuning every pretrained weight beats scratch too":
            many["gain_finetune"] > 0,
        "the head was re-initialized, the backbone loaded":
            few["linear_probe"]["head_reset"] == ["head.bias", "head.weight"]
            and few["linear_probe"]["loaded_tensors"] == n["pretrain"]["backbone_tensors"],
    }
    sentence = (f"With {FEW} labeled rows per class of task B, the backbone pretrained on task A, frozen, reaches "
                f"{lp(FEW):.3f} test accuracy against {sc(FEW):.3f} from scratch (+{few['gain_linear_probe']:.3f}); "
                f"with {SHOTS[1]} per class {lp(SHOTS[1]):.3f} vs {sc(SHOTS[1]):.3f}, with {MANY} {lp(MANY):.3f} vs "
                f"{sc(MANY):.3f}: the gap closes as labels grow. Fine-tuning every pretrained weight gives "
                f"{ft(FEW):.3f}, {ft(SHOTS[1]):.3f} and {ft(MANY):.3f}"
                + (f" (below the frozen backbone with {FEW} rows per class: fitting every weight to "
                   f"{few['train_rows']} rows moves it away from what pretraining found)." if ft(FEW) < lp(FEW) else "."))
    return sentence, checks


LAB = Lab("transfer", "Transfer learning: a pretrained start with few labels",
          "With few labels, a network pretrained on a related task (same inputs, other classes, every label) "
          "beats the same network trained from scratch; the advantage shrinks as labels grow.",
          (make_data, pretrain, few_labels, plot), conclude,
          intro="Features learned on a task with many labels carry over to a related task with few: reuse "
                "them, and compare with the same network from random weights on the same budget. Pretraining "
                "helps when the source task needs the features the target needs.")
