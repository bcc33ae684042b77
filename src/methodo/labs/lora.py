"""Lab `lora`: low-rank adapters (LoRA, through PEFT: ``transfer.strategy: lora``) against full fine-tuning and a
linear probe. An mlp of 84 k parameters is pretrained by methodo's training loop on scikit-learn's digits 0-4;
its backbone is saved as a safetensors file. Digits 5-9 are then learned from it three ways with the same data,
split and epochs: the backbone frozen and a new head trained (``linear_probe``); every weight trained
(``finetune``); the backbone frozen with a trainable low-rank update ``B·A`` beside each of its two Linear
layers, of rank 1, 4 and 16, and the head (``lora``). The features learned on 0-4 need adapting to 5-9 (the
linear probe falls short); LoRA adapts them with a few percent of the parameters and comes within a point or
two of full fine-tuning; its update folds back into the weights for inference (``methodo.transfer.lora.merge``)."""

from __future__ import annotations

from methodo.labs import Lab, LabContext, step

HIDDEN = [256, 256]
RANKS = (1, 4, 16)
EPOCHS = 20


@step
def pretrain(ctx: LabContext):
    """**Pretrain on digits 0-4.** `data.options.classes: [0, 1, 2, 3, 4]` keeps five digits of
    scikit-learn's `digits` (8×8 images, flattened by the `mlp`); an `mlp` [256, 256] (84 k parameters)
    trains 10 epochs on 70 % of them (Adam, 0.003). Its weights, **the head left out** (it predicts 0-4), are
    saved as a safetensors file: the pretrained model to adapt."""
    from safetensors.torch import save_file

    prep, res = ctx.train("pretrain", {
        "data": {"source": "digits", "options": {"classes": [0, 1, 2, 3, 4]},
                 "split": {"method": "stratified", "val": 0.2, "test": 0.1}},
        "model": {"name": "mlp", "hidden": HIDDEN, "dropout": 0.0},
        "train": {"epochs": 10, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.003}, "early_stopping": None}})
    body = {k: v.contiguous() for k, v in prep.model.state_dict().items() if not k.startswith("head.")}
    path = ctx.run_dir("backbone") / "mlp_digits_0-4.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(body, str(path))
    ctx.state["backbone"] = str(path)
    return ctx.record(pretrain={"epochs": res.epochs_run, "best_val_loss": min(r["val_loss"] for r in res.history),
                                "parameters": int(sum(p.numel() for p in prep.model.parameters()))})


@step
def adapt(ctx: LabContext):
    """**Adapt to digits 5-9, five ways.** A stratified split of digits 5-9: 25 % for training (about 220
    images), 15 % for validation, 60 % for the test. From the saved backbone, 20 epochs each (batches of 32):
    `transfer.strategy: linear_probe` (Adam at 0.01), `finetune` (every weight, Adam at 0.001), and `lora`
    with `transfer.lora: {r: R, alpha: 2R}` for R = 1, 4, 16 (Adam at 0.003: the update `B·A` starts at zero,
    `B = 0`, and is usually given a larger learning rate). The plan counts the trainable parameters
    (`trainable_parameters`, `trainable_share`); the kept weights (best epoch by validation loss) are scored
    once on the test images. The rank-4 adapter is then merged into the weights (`merge`: a plain mlp again)
    and its test predictions compared with the adapter's."""
    import torch

    from methodo.evaluate.metrics import compute_metrics, predict
    from methodo.transfer.lora import merge

    runs = {"linear_probe": ("linear_probe", None, 0.01), "finetune": ("finetune", None, 0.001)}
    runs.update({f"lora_r{r}": ("lora", {"r": r, "alpha": 2.0 * r}, 0.003) for r in RANKS})
    out = {}
    for name, (strategy, lora, lr) in runs.items():
        prep, res = ctx.train(name, {
            "data": {"source": "digits", "options": {"classes": [5, 6, 7, 8, 9]},
                     "split": {"method": "stratified", "val": 0.15, "test": 0.6}},
            "model": {"name": "mlp", "hidden": HIDDEN, "dropout": 0.0, "pretrained": ctx.state["backbone"]},
            "transfer": {"strategy": strategy, **({"lora": lora} if lora else {})},
            "train": {"epochs": EPOCHS, "batch_size": 32, "optimizer": {"name": "adam", "lr": lr},
                      "early_stopping": None}})
        X, y = prep.data.tensors["test"]
        scores = predict(prep.model, X, task="classification")
        info = prep.plan.info
        out[name] = {"test_accuracy": compute_metrics("classification", scores, y.numpy(), 5,
                                                      names=["accuracy"])["accuracy"],
                     "trainable_parameters": info["trainable_parameters"], "total_parameters": info["total_parameters"],
                     "trainable_share": info["trainable_share"], "best_epoch": res.best_epoch, "lr": lr}
        if name == f"lora_r{RANKS[1]}":
            with torch.no_grad():
                before = prep.model(X)
                merged = merge(prep.model).eval()
                after = merged(X)
            out[name]["merged"] = {"max_abs_logit_diff": float((before - after).abs().max()),
                                   "same_predictions": bool(torch.equal(before.argmax(1), after.argmax(1))),
                                   "parameters": int(sum(p.numel() for p in merged.parameters())),
                                   "peft_modules_left": sum("lora" in n for n, _ in merged.named_modules())}
        ctx.state["train_images"], ctx.state["test_images"] = len(prep.data.indices["train"]), len(X)
    return ctx.record(ranks=list(RANKS), runs=out, train_images=ctx.state["train_images"],
                      test_images=ctx.state["test_images"])


@step
def plot(ctx: LabContext):
    """**Figure.** Test accuracy against the share of parameters trained (log scale): the linear probe trains
    the head alone (1.5 %) and falls short; LoRA's rank moves it up the curve; full fine-tuning trains
    everything. A rank-4 adapter, about 5 % of the parameters, is within a point or two of full fine-tuning."""
    import matplotlib.pyplot as plt

    runs = ctx.numbers["runs"]
    fig, ax = plt.subplots(figsize=(6.6, 3.8))
    lora = [runs[f"lora_r{r}"] for r in RANKS]
    ax.plot([100 * v["trainable_share"] for v in lora], [v["test_accuracy"] for v in lora], "o-", c="#4477aa",
            label="LoRA (rank 1, 4, 16)")
    for r, v in zip(RANKS, lora):
        ax.annotate(f"r = {r}", (100 * v["trainable_share"], v["test_accuracy"]), textcoords="offset points",
                    xytext=(4, -12), fontsize=8)
    for name, marker, c in (("linear_probe", "s", "#cc3311"), ("finetune", "D", "#228833")):
        v = runs[name]
        ax.plot(100 * v["trainable_share"], v["test_accuracy"], marker, c=c, ms=8,
                label=f"{name.replace('_', ' ')} ({v['trainable_parameters']:,} parameters)")
    ax.axhline(runs["finetune"]["test_accuracy"], c="#228833", ls=":", lw=1)
    ax.set_xscale("log")
    ax.minorticks_off()
    ticks = [1, 2, 5, 10, 20, 50, 100]
    ax.set_xticks(ticks, [f"{t} %" for t in ticks])
    ax.set_xlabel("parameters trained (share of the model, log scale)")
    ax.set_ylabel("test accuracy (digits 5-9)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    ctx.figure(fig, "lora")


def conclude(ctx: LabContext):
    n = ctx.numbers
    runs = n["runs"]
    lp, ft = runs["linear_probe"], runs["finetune"]
    lora = {r: runs[f"lora_r{r}"] for r in RANKS}
    mid = lora[RANKS[1]]
    checks = {
        f"LoRA rank {RANKS[1]} trains under 10 % of the parameters": mid["trainable_share"] < 0.10,
        f"and comes within 0.03 test accuracy of full fine-tuning": mid["test_accuracy"] >= ft["test_accuracy"] - 0.03,
        "every rank beats the linear probe (the features needed adapting)":
            all(v["test_accuracy"] > lp["test_accuracy"] for v in lora.values()),
        f"rank {RANKS[1]} does better than rank {RANKS[0]}": mid["test_accuracy"] > lora[RANKS[0]]["test_accuracy"],
        "trainable parameters: probe < LoRA rank 1 < 4 < 16 < full fine-tuning":
            lp["trainable_parameters"] < lora[RANKS[0]]["trainable_parameters"] < mid["trainable_parameters"]
            < lora[RANKS[-1]]["trainable_parameters"] < ft["trainable_parameters"],
        "the merged adapter predicts as the adapter (a plain mlp, no LoRA module left)":
            mid["merged"]["same_predictions"] and mid["merged"]["max_abs_logit_diff"] < 1e-4
            and mid["merged"]["peft_modules_left"] == 0 and mid["merged"]["parameters"] == n["pretrain"]["parameters"],
    }
    ranks = ", ".join(f"rank {r} {100 * v['trainable_share']:.1f} % → {v['test_accuracy']:.3f}" for r, v in lora.items())
    sentence = (f"On digits 5-9 from an mlp pretrained on 0-4, full fine-tuning trains all "
                f"{ft['trainable_parameters']:,} parameters to {ft['test_accuracy']:.3f} test accuracy and the linear "
                f"probe {100 * lp['trainable_share']:.1f} % of them to {lp['test_accuracy']:.3f}; LoRA: {ranks}. Merged "
                f"into the weights, the rank-{RANKS[1]} adapter gives the same predictions (largest logit difference "
                f"{mid['merged']['max_abs_logit_diff']:.1e}).")
    return sentence, checks


LAB = Lab("lora", "LoRA: few trainable parameters, close to full fine-tuning",
          "Low-rank adapters train a few percent of a pretrained network's parameters and come close to full "
          "fine-tuning's accuracy, well above a linear probe; merged, they cost nothing at inference.",
          (pretrain, adapt, plot), conclude,
          intro="Fine-tuning every weight of a large pretrained model is costly (memory for every gradient and "
                "optimizer state, a full copy per task). LoRA freezes the weights W and learns a low-rank update "
                "W + B·A beside them: a few parameters per task, merged into W for inference.")
