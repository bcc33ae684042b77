"""The transfer findings: is the pretrained model worth it on *this* data, and is it trained right?

Each check reads ``Facts.transfer`` (``summary.json`` → ``transfer``, with the run's history and test
metrics beside it) and returns a :class:`~methodo.findings.Finding` or ``None``; they are registered in
the one ``FINDINGS`` registry (importing :mod:`methodo.diagnose` imports this module).
"""

from __future__ import annotations

from methodo.findings import FINDINGS, Finding, certainty


def _headline(f):
    key, better = f.spec.headline
    return key, better


@FINDINGS.register("domain_mismatch", check=True,
                   help="the inputs differ from what the pretrained backbone was trained on (channels, size, "
                        "intensity statistics)")
def domain_mismatch(f) -> Finding | None:
    t = f.transfer or {}
    exp, got = t.get("expects"), t.get("data")
    if not exp or not got:
        return None
    problems, ev = [], {}
    if exp.get("channels") and exp["channels"] != got["channels"]:
        problems.append(f"{got['channels']} channel(s) where it expects {exp['channels']}")
        ev.update(expected_channels=exp["channels"], data_channels=got["channels"])
    if exp.get("size"):
        ratio = min(g / e for g, e in zip(got["size"], exp["size"]))
        if ratio < 0.5 or ratio > 2:
            problems.append(f"{got['size'][0]}×{got['size'][1]} images where it expects {exp['size'][0]}×{exp['size'][1]}")
            ev.update(expected_size=exp["size"], data_size=got["size"], size_ratio=round(ratio, 4))
    gaps = [abs(m - em) / es for m, em, es in zip(got["mean"], exp["mean"], exp["std"]) if es > 0]
    spread = [s / es for s, es in zip(got["std"], exp["std"]) if es > 0]
    if gaps and (max(gaps) > 0.5 or max(spread) > 2 or min(spread) < 0.5):
        problems.append("pixel statistics far from its normalization")
    ev.update(data_mean=got["mean"], data_std=got["std"], expected_mean=exp["mean"], expected_std=exp["std"],
              mean_gap_in_stds=round(max(gaps), 4) if gaps else None,
              std_ratio=round(max(spread, key=lambda r: abs(r - 1)), 4) if spread else None)
    ev["certainty"] = certainty("threshold rule", "Rules of thumb on the training inputs' statistics (every "
                                "training input counted): channels differ, size off by more than 2×, or a channel "
                                "mean more than 0.5 of the backbone's std away, or a spread beyond 0.5–2×.")
    if not problems:
        return None
    return Finding(
        "domain_mismatch", "medium" if len(problems) > 1 else "low",
        "The data differs from the backbone's pretraining: " + "; ".join(problems), ev,
        "Expect less from frozen features: fine-tune (transfer.strategy: finetune or gradual_unfreeze) rather than "
        "probe, bring the inputs closer (data.image_size to the size it expects, color images where it expects "
        "them), and check with transfer.compare_scratch that the pretrained start helps at all.")


@FINDINGS.register("pretrained_not_helping", check=True,
                   help="the pretrained model does no better than the same model trained from scratch "
                        "(transfer.compare_scratch)")
def pretrained_not_helping(f) -> Finding | None:
    t = f.transfer or {}
    scratch = t.get("scratch")
    test = f.metrics.get("test", {})
    if not scratch or not test or t.get("distill"):  # distillation's scratch student: distillation_not_helping
        return None
    key, better = _headline(f)
    mine, theirs = test.get(key), (scratch.get("metrics") or {}).get(key)
    if mine is None or theirs is None:
        return None
    iv = f.intervals.get(key)
    worst = (iv[0] if better > 0 else iv[1]) if iv else mine
    if better * (worst - theirs) > 0:
        return None  # better than scratch beyond its own interval
    return Finding(
        "pretrained_not_helping", "medium",
        f"The pretrained start is no better than scratch on this data: test {key} {mine:.4g} vs {theirs:.4g}",
        {"metric": key, "transfer": round(mine, 6), "transfer_interval": iv, "scratch": round(theirs, 6),
         "strategy": t.get("strategy"), "scratch_epochs": scratch.get("epochs_run"),
         "trainable_parameters": t.get("trainable_parameters"), "scratch_parameters": scratch.get("parameters"),
         "certainty": certainty("bootstrap interval", f"The scratch model's test {key} is inside (or beyond) the "
                                "bootstrap interval of the transfer model's: the test set does not show the "
                                "pretrained start to help.", interval=iv) if iv else
         certainty("threshold rule", f"No interval for the transfer model's {key}: compared as point values.")},
        "The pretraining domain may be too far from this data (see domain_mismatch), or the data is plentiful "
        "enough: fine-tune more of the model, try a backbone pretrained closer to this data, or keep the "
        "smaller scratch model.")


@FINDINGS.register("catastrophic_forgetting", check=True,
                   help="full fine-tuning lost the pretrained features' accuracy in its first epoch (LR too high "
                        "for a pretrained model)")
def catastrophic_forgetting(f) -> Finding | None:
    t = f.transfer or {}
    probe = t.get("probe")
    score = f"val_{f.spec.score}"
    if not probe or t.get("strategy") not in ("finetune", "gradual_unfreeze", "none") or not f.history:
        return None
    first = f.history[0].get(score)
    if first is None or probe.get("val") is None or first >= probe["val"] - 0.10:
        return None
    return Finding(
        "catastrophic_forgetting", "high",
        f"Fine-tuning destroyed the pretrained features: {score} {first:.3f} after epoch 1, where a linear "
        f"probe of the pretrained features reaches {probe['val']:.3f}",
        {"probe_val": round(probe["val"], 4), "probe_model": probe.get("model"), f"epoch1_{score}": round(first, 4),
         "best_" + score: round(max(r.get(score, 0) for r in f.history), 4), "lr": f.lr,
         "strategy": t.get("strategy"),
         "certainty": certainty("threshold rule", "Epoch 1's validation score is more than 0.10 below a linear "
                                "probe of the pretrained features on the same validation rows (a rule of thumb, "
                                "no interval).")},
        "Lower the learning rate 3-10× (pretrained weights need small steps), add warm-up, give lower layers "
        "lower LRs (transfer.lr_decay: 0.5), or train the head first (transfer.strategy: gradual_unfreeze, or "
        "linear_probe then finetune from that run).")


@FINDINGS.register("frozen_backbone_underfits", check=True,
                   help="a linear probe plateaus at a high training error: the frozen features cannot separate "
                        "the classes")
def frozen_backbone_underfits(f) -> Finding | None:
    t = f.transfer or {}
    score = f"train_{f.spec.score}"
    h = f.history
    if t.get("strategy") != "linear_probe" or len(h) < 3 or not f.spec.has_classes or score not in h[-1]:
        return None
    last, prev = h[-1][score], max(r[score] for r in h[:-1])
    scratch = ((t.get("scratch") or {}).get("metrics") or {}).get("accuracy")
    test = f.metrics.get("test", {}).get("accuracy")
    beaten = scratch is not None and test is not None and scratch > test + 0.05
    plateau = last - prev < 0.01
    if not ((plateau and 1 - last >= 0.15) or beaten):
        return None
    return Finding(
        "frozen_backbone_underfits", "medium",
        f"The frozen backbone underfits: the linear probe plateaus at training accuracy {last:.3f}",
        {"train_accuracy": round(last, 4), "best_earlier_train_accuracy": round(prev, 4), "epochs": len(h),
         "test_accuracy": test, "scratch_test_accuracy": scratch,
         "trainable_parameters": t.get("trainable_parameters"), "total_parameters": t.get("total_parameters"),
         "certainty": certainty("threshold rule", "The probe's training accuracy gained under 0.01 in its last "
                                "epoch while at least 15% of training rows stay wrong, or scratch beat it on test by "
                                "more than 0.05 (rules of thumb).")},
        "The pretrained features do not separate these classes linearly: unfreeze the top blocks "
        "(transfer.strategy: gradual_unfreeze) or fine-tune everything with a small LR (finetune, lr_decay).")


@FINDINGS.register("distillation_not_helping", check=True,
                   help="the distilled student does no better than the same student trained from scratch with the "
                        "same budget (distill.teacher)")
def distillation_not_helping(f) -> Finding | None:
    d = (f.transfer or {}).get("distill")
    if not d or d.get("beats_scratch") is not False or d.get("difference") is None:
        return None
    metric = d.get("metric", "accuracy")
    m = lambda who: ((d.get(who) or {}).get("metrics") or {}).get(metric)  # noqa: E731
    student, scratch, teacher = m("student"), m("scratch"), m("teacher")
    iv = d.get("difference_interval")
    weak_teacher = teacher is not None and scratch is not None and teacher <= scratch
    return Finding(
        "distillation_not_helping", "medium",
        f"Distillation did not beat the same student from scratch: test {metric} {student:.4g} vs {scratch:.4g}"
        + (f" (difference {d['difference']:+.4g}, interval [{iv[0]:+.4g}, {iv[1]:+.4g}])" if iv else ""),
        {"metric": metric, "student": student, "scratch": scratch, "teacher": teacher,
         "difference": d.get("difference"), "difference_interval": iv, "temperature": d.get("temperature"),
         "alpha": d.get("alpha"), "teacher_parameters": (d.get("teacher") or {}).get("parameters"),
         "student_parameters": (d.get("student") or {}).get("parameters"),
         "certainty": certainty("bootstrap interval", f"The paired-bootstrap interval of the student's {metric} minus "
                                "the scratch student's, on the same test rows, does not lie above zero.", interval=iv)
         if iv else certainty("threshold rule", f"No interval: the student's {metric} is not above the scratch "
                              "student's.")},
        ("The teacher is no better than the student from scratch: distill from a stronger teacher (larger, "
         "trained longer, pretrained)." if weak_teacher else
         "Try a higher distill.temperature (softer targets carry more of the teacher's knowledge), a larger "
         "distill.alpha, more epochs, or augmentation (the student then sees more of the teacher's function); "
         "with plenty of labels the teacher adds little.")
        + " Keep the scratch student if the difference stays within chance.")
