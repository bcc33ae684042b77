"""Lab `distillation`: a small student learns from a teacher's soft targets (Hinton et al.'s knowledge
distillation, methodo's ``distill`` section) against the same student trained from scratch on the labels alone.
scikit-learn's digits are cut in two halves of different images: the teacher, an mlp eight times the student's
size, is trained by ``methodo run`` on the first half with every label; the student sees only a few labeled
images per class of the second half. With ``distill.teacher: RUN_DIR`` the student's loss mixes the labels and
the teacher's class probabilities at temperature T on the student's own training images; the scratch twin has
the same initial weights, batches and epochs. The teacher's probabilities say how much each image looks like
every class — what its 900 labeled images taught it — and the student beats its scratch twin on the test images,
beyond the paired-bootstrap interval."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

SHOTS = (3, 10)  # labeled training images per class for the student
TEMPERATURE, ALPHA = 4.0, 0.9
STUDENT, TEACHER = [16], [128]
EPOCHS = 80
VAL_PER_CLASS = 3


def _data(path: str, split: dict) -> dict:
    # pixels divided by 16 into [0, 1] in the file: no scaling fitted on a few dozen rows
    return {"source": "csv", "path": path, "target": "label", "scale": "none", "split": split}


@step
def make_data(ctx: LabContext):
    """**Two halves of digits.** scikit-learn's `digits` (1797 images of 8×8 pixels, 10 classes), the pixels
    divided by 16, shuffled with the seed and cut in two: 900 images for the teacher, the other 897 for the
    student. No image is in both; each half is written to a CSV file (64 pixel columns and the label)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(ctx.seed).permutation(len(y))
    halves = {"teacher": perm[:900], "student": perm[900:]}
    for name, rows in halves.items():
        path = ctx.run_dir("data") / f"digits_{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(",".join(f"p{i}" for i in range(64)) + ",label\n" + "".join(
            ",".join(f"{v / 16:.4f}" for v in X[r]) + f",d{y[r]}\n" for r in rows))
        ctx.state[name] = str(path)
    return ctx.record(images={k: len(v) for k, v in halves.items()})


@step
def teacher(ctx: LabContext):
    """**The teacher: `methodo run` on the first half.** An `mlp` with one hidden layer of 128 units (dropout
    0.2; 9.6 k parameters) trains 15 epochs on 80 % of the teacher's 900 images with every label (Adam at
    0.003). Its run dir — best weights, config, the classes it predicts — is what `distill.teacher` takes."""
    res = ctx.run_pipeline("teacher", {
        "data": _data(ctx.state["teacher"], {"method": "stratified", "val": 0.15, "test": 0.05}),
        "model": {"name": "mlp", "hidden": TEACHER, "dropout": 0.2},
        "train": {"epochs": 15, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003},
                  "early_stopping": None, "monitor": {"enabled": False}},
        "evaluate": {"bootstrap": 0, "reference": False}})
    ctx.state["teacher_dir"] = str(res.run_dir)
    return ctx.record(teacher={"train_images": res.record.data.splits["train"].n,
                               "val_accuracy": res.record.metrics["val"]["accuracy"]})


@step
def students(ctx: LabContext):
    """**Student and scratch twin, with 3 and 10 labels per class.** A stratified split of the student's half
    keeps 3 or 10 labeled images per class for training, 3 per class for validation and the rest (about 770
    to 840 images) for the test. The student, an `mlp` with 16 hidden units (1.2 k parameters), trains 80
    epochs (Adam at 0.01) twice: with `distill: {teacher: RUN_DIR, temperature: 4, alpha: 0.9}` — the loss
    `0.1 · CE(labels) + 0.9 · T² · KL(teacher_T ‖ student_T)`, the teacher's soft targets computed once on the
    student's training images — and without (the same initial weights, batches and epochs). Both are scored
    once on the test images, with the teacher, by `methodo.transfer.distill.side_by_side`: test accuracy
    with its bootstrap interval, and the student − scratch difference with its paired interval over the same
    test images."""
    import torch

    from methodo.evaluate.metrics import predict
    from methodo.transfer.distill import side_by_side

    out = {}
    n = 897
    for shots in SHOTS:
        val = 10 * VAL_PER_CLASS / n
        split = {"method": "stratified", "val": val, "test": 1 - val - (10 * shots + 0.5) / n}
        base = {"data": _data(ctx.state["student"], split), "model": {"name": "mlp", "hidden": STUDENT, "dropout": 0.0},
                "train": {"epochs": EPOCHS, "batch_size": min(32, 10 * shots), "optimizer": {"name": "adam", "lr": 0.01},
                          "early_stopping": None}}
        prep, res = ctx.train(f"student-{shots}", {**base, "distill": {
            "teacher": ctx.state["teacher_dir"], "temperature": TEMPERATURE, "alpha": ALPHA}})
        twin, twin_res = ctx.train(f"scratch-{shots}", base)
        X, y = prep.data.tensors["test"]
        teach = prep.teacher
        scores = {"teacher": torch.softmax(teach.logits(X, batch_size=1024), dim=1).numpy(),
                  "student": predict(prep.model, X, task="classification"),
                  "scratch": predict(twin.model, X, task="classification")}
        table = side_by_side("classification", y.numpy(), scores, n_classes=10, metric="accuracy",
                             names=["accuracy"], n_boot=300, seed=ctx.seed, level=0.95)
        row = {name: {"test_accuracy": m["metrics"]["accuracy"], "interval": m["intervals"].get("accuracy")}
               for name, m in table["models"].items()}
        params = lambda m: int(sum(p.numel() for p in m.parameters()))  # noqa: E731
        row["teacher"]["parameters"] = params(teach.model)
        row["teacher"]["train_accuracy_on_student_images"] = teach.info["soft_targets"]["train_accuracy"]
        row["student"]["parameters"] = params(prep.model)
        row["scratch"]["parameters"] = params(twin.model)
        row["student"]["best_epoch"], row["scratch"]["best_epoch"] = res.best_epoch, twin_res.best_epoch
        row.update(train_images=len(prep.data.indices["train"]), test_images=len(X),
                   difference=table["difference"], difference_interval=table["interval"],
                   same_split=bool(np.array_equal(prep.data.indices["test"], twin.data.indices["test"])))
        out[str(shots)] = row
    return ctx.record(shots=list(SHOTS), temperature=TEMPERATURE, alpha=ALPHA, by_shots=out)


@step
def plot(ctx: LabContext):
    """**Figure.** Test accuracy with its 95 % bootstrap interval for the teacher, the distilled student and
    the scratch student, with 3 and 10 labels per class: the student closes much of the way to the teacher
    with an eighth of its parameters."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    fig, ax = plt.subplots(figsize=(9.5, 3.6))
    colors = {"teacher": "#777777", "student": "#228833", "scratch": "#cc3311"}
    labels = {"teacher": f"teacher ({n['by_shots'][str(SHOTS[0])]['teacher']['parameters']} parameters, 900 labels)",
              "student": f"distilled student ({n['by_shots'][str(SHOTS[0])]['student']['parameters']} parameters)",
              "scratch": "the same student from scratch"}
    x = np.arange(len(SHOTS))
    for i, name in enumerate(("teacher", "student", "scratch")):
        acc = np.array([n["by_shots"][str(k)][name]["test_accuracy"] for k in SHOTS])
        iv = np.array([n["by_shots"][str(k)][name]["interval"] or [a, a] for k, a in zip(SHOTS, acc)])
        ax.bar(x + (i - 1) * 0.27, acc, 0.27, color=colors[name], label=labels[name],
               yerr=[acc - iv[:, 0], iv[:, 1] - acc], capsize=3)
    ax.set_xticks(x, [f"{k} labels per class\n({n['by_shots'][str(k)]['train_images']} training images)" for k in SHOTS])
    ax.set_ylabel("test accuracy (95 % interval)")
    ax.set_ylim(0.5, 1.0)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    ctx.figure(fig, "distillation")


def conclude(ctx: LabContext):
    n = ctx.numbers
    rows = [n["by_shots"][str(k)] for k in SHOTS]
    checks = {
        "the distilled student beats the scratch student at every number of labels (paired 95 % interval above 0)":
            all(r["difference_interval"] is not None and r["difference_interval"][0] > 0 for r in rows),
        "by at least 0.03 test accuracy": all(r["difference"] >= 0.03 for r in rows),
        "the teacher is better than both": all(r["teacher"]["test_accuracy"] > r["student"]["test_accuracy"]
                                               and r["teacher"]["test_accuracy"] > r["scratch"]["test_accuracy"]
                                               for r in rows),
        "the student is the scratch twin's size, the teacher ≥ 5× larger":
            all(r["student"]["parameters"] == r["scratch"]["parameters"]
                and r["teacher"]["parameters"] >= 5 * r["student"]["parameters"] for r in rows),
        "student and twin were scored on the same test images": all(r["same_split"] for r in rows),
    }
    parts = [f"with {k} labels per class the distilled student reaches {r['student']['test_accuracy']:.3f} test "
             f"accuracy against {r['scratch']['test_accuracy']:.3f} from scratch (difference "
             f"{r['difference']:+.3f}, paired 95 % interval [{r['difference_interval'][0]:+.3f}, "
             f"{r['difference_interval'][1]:+.3f}]; teacher {r['teacher']['test_accuracy']:.3f})"
             for k, r in zip(SHOTS, rows)]
    sentence = (f"Learning from the soft targets (T = {TEMPERATURE:g}, alpha = {ALPHA:g}) of a teacher with "
                f"{rows[0]['teacher']['parameters']} parameters trained on 900 other labeled images, the "
                f"{rows[0]['student']['parameters']}-parameter student beats its scratch twin: "
                + "; ".join(parts) + ".")
    return sentence, checks


LAB = Lab("distillation", "Knowledge distillation: a student learns from a teacher",
          "A small student trained on a few labels plus a bigger teacher's soft targets beats the same student "
          "trained from scratch on the labels alone (same initial weights, batches and epochs).",
          (make_data, teacher, students, plot), conclude,
          intro="A teacher's class probabilities carry more than the label: how much an image looks like every "
                "class. A student trained to match them (at a temperature T that softens them) inherits part of "
                "what the teacher learned, in a model small enough to deploy.")
