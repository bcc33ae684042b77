"""Lab `discrimination`: a hiring table with a planted bias, audited and mitigated by methodo's fairness code.

The course's recruiting story ("is the dataset guilty?"), made measurable. Applicants have a merit made of
their experience, education, test and interview scores, the same in both genders; the historical decisions
(the labels) hired those above the merit bar, except that 40 % of the qualified women were turned down. The
table also lists a *women's club* membership (70 % of women, 2 % of men) that says nothing about merit. The
model never sees ``gender`` (``data.sensitive`` keeps it for evaluation only), yet methodo's fairness stage
(``methodo.trust.fairness``, fairlearn) finds that it selects fewer women (``group_disparity``), that the club
is a proxy of gender (``proxy_feature``) and that the labels themselves are biased (``label_bias``); the
model's selections show the proxy at work. Two mitigations of ``fairness.mitigation`` (``methodo.trust.
mitigate``) are compared on the same test rows: each reduces the disparity at a stated accuracy cost —
accuracy against the biased historical labels."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

ROWS = 4000
PENALTY, CLUB = 0.4, (0.7, 0.02)  # share of qualified women turned down; club membership of women, of men
EDUCATION = ["highschool", "bachelor", "master", "phd"]
MITIGATIONS = ["reweighing", "threshold_optimizer"]
CHOSEN = "reweighing"  # the mitigation the conclusion is about (the other one is shown beside it)


@step
def make_data(ctx: LabContext):
    """**A biased hiring table.** 4000 applicants (35 % women), written to a CSV file. Merit is a noisy weighted
    sum of years of experience, education, test score and interview score — the same formula for everyone —
    and the better half is *qualified*. The label `hired` is the historical decision: qualified applicants were
    hired, except 40 % of the qualified women (the planted bias); 5 % of all decisions are flipped (noise).
    `womens_club` is 1 for 70 % of the women and 2 % of the men and plays no part in merit."""
    rng = np.random.default_rng(ctx.seed)
    woman = rng.random(ROWS) < 0.35
    years = np.clip(rng.gamma(2.0, 3.0, ROWS), 0, 40).round(1)
    edu = rng.choice(4, ROWS, p=[0.3, 0.4, 0.22, 0.08])
    test = np.clip(rng.normal(60, 15, ROWS), 0, 100).round(0)
    interview = np.clip(rng.normal(5, 2, ROWS), 0, 10).round(1)
    club = np.where(woman, rng.random(ROWS) < CLUB[0], rng.random(ROWS) < CLUB[1]).astype(int)
    merit = 0.12 * years + 0.6 * edu + 0.05 * (test - 60) + 0.45 * (interview - 5) + rng.normal(0, 0.6, ROWS)
    qualified = merit > np.median(merit)
    hired = (qualified & ~(woman & (rng.random(ROWS) < PENALTY))) ^ (rng.random(ROWS) < 0.05)
    path = ctx.run_dir("data") / "hiring.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("years_experience,education,test_score,interview_score,womens_club,gender,hired\n" + "".join(
        f"{a},{EDUCATION[b]},{int(c)},{d},{e},{'F' if f else 'M'},{'yes' if g else 'no'}\n"
        for a, b, c, d, e, f, g in zip(years, edu, test, interview, club, woman, hired)))
    ctx.state.update(path=str(path))
    rate = lambda m: float(hired[m].mean())  # noqa: E731
    return ctx.record(rows=ROWS, women=int(woman.sum()),
                      qualified_share={"F": float(qualified[woman].mean()), "M": float(qualified[~woman].mean())},
                      hired_share={"F": rate(woman), "M": rate(~woman)},
                      club_share={"F": float(club[woman].mean()), "M": float(club[~woman].mean())})


@step
def audit(ctx: LabContext):
    """**Train, then audit with methodo's fairness stage.** The table with `data.sensitive: [gender]` (kept out
    of the features), a stratified split 50 / 25 / 25 %, an `mlp` with one hidden layer of 32 units, Adam,
    15 epochs, early stopping on val loss. Then the pipeline's own steps: the predictions of every split
    (`stages.predict_splits`), the fairness evaluation (`methodo.trust.fairness.evaluate_fairness`: per-group
    metrics with 200-resample bootstrap intervals, fairlearn's disparity measures, proxies and label bias on the
    training rows) and the findings it raises (`trust_findings`)."""
    from methodo import stages
    from methodo.trust.fairness import evaluate_fairness
    from methodo.trust.findings import trust_findings

    prep, res = ctx.train("hiring", {
        "data": {"source": "csv", "path": ctx.state["path"], "target": "hired", "sensitive": ["gender"],
                 "split": {"method": "stratified", "val": 0.25, "test": 0.25}},
        "model": {"name": "mlp", "hidden": [32], "dropout": 0.0},
        "train": {"epochs": 15, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003},
                  "early_stopping": {"monitor": "val_loss", "patience": 5}},
        "evaluate": {"bootstrap": 200},
        "fairness": {"mitigation": MITIGATIONS, "constraint": "demographic_parity"}})
    preds = stages.predict_splits(prep)
    cfg = prep.cfg
    fair = evaluate_fairness(prep, preds, seed=cfg.seed, n_boot=cfg.evaluate.bootstrap,
                             level=cfg.evaluate.confidence, fcfg=cfg.fairness)
    findings = {f.id: f for f in trust_findings(fair, None)}
    ctx.state.update(prep=prep, preds=preds, fairness=fair)
    g = fair["attributes"]["gender"]
    test = g["splits"]["test"]
    keep = ("n", "accuracy", "selection_rate", "tpr", "fpr")
    return ctx.record(
        features=list(prep.data.feature_names),
        test_groups={k: {m: v.get(m) for m in keep} for k, v in test["groups"].items()},
        test_disparity={k: test["disparity"][k] for k in ("demographic_parity_difference",
                                                          "equalized_odds_difference")},
        test_disparity_intervals={k: test["disparity_intervals"][k] for k in ("demographic_parity_difference",
                                                                              "equalized_odds_difference")},
        top_proxy=g["proxies"][0] if g["proxies"] else None,
        label_bias={"gap": g["label_bias"]["gap"], "interval": g["label_bias"]["interval"]},
        findings=sorted(findings), finding_titles={k: f.title for k, f in findings.items()},
        proxy_feature_named=(findings["proxy_feature"].evidence["feature"] if "proxy_feature" in findings else None))


@step
def proxy(ctx: LabContext):
    """**The proxy at work.** The model was never given `gender`; on the test rows, its selection rate is
    split by gender *and* club membership, and its permutation importance (`methodo.explain.report.
    permutation_importance`: the loss increase when one column is shuffled) ranks the features. If women in
    the club are selected less than women outside it, the model has learned the bias through the club."""
    from methodo.explain.report import permutation_importance

    prep, preds = ctx.state["prep"], ctx.state["preds"]
    ds, rows = prep.ds, prep.data.indices["test"]
    gender = np.asarray(ds.sensitive["gender"])[rows].astype(str)
    names = list(prep.data.feature_names)
    club_col = next(i for i, f in enumerate(names) if f.startswith("womens_club"))
    Xs = prep.data.tensors["test"][0]
    pre = prep.data.preprocessor
    club = (Xs[:, club_col].numpy() * pre.std.ravel()[club_col] + pre.mean.ravel()[club_col]) > 0.5
    selected = preds["test"].argmax(1) == 1
    cells = {"F, club": (gender == "F") & club, "F, no club": (gender == "F") & ~club, "M": gender == "M"}
    rates = {k: {"n": int(m.sum()), "selection_rate": float(selected[m].mean())} for k, m in cells.items()}
    imp = permutation_importance(prep.model, Xs, prep.data.tensors["test"][1], prep.data.task, repeats=5,
                                 seed=ctx.seed)
    ranked = sorted(((names[j], v[0]) for j, v in imp.items()), key=lambda t: -t[1])
    return ctx.record(selection_by_club=rates, importance=[[f, v] for f, v in ranked],
                      club_rank=1 + [f for f, _ in ranked].index(names[club_col]))


@step
def mitigate(ctx: LabContext):
    """**Mitigate, side by side.** `fairness.mitigation: [reweighing, threshold_optimizer]` with `constraint:
    demographic_parity`, through `methodo.trust.mitigate.mitigate` on the same test rows: *reweighing* retrains
    the same model on training rows drawn with weights P(gender) P(label) / P(gender, label) (group and label
    independent in what the model sees); *threshold_optimizer* (fairlearn) keeps the model and chooses a
    threshold per group on the validation split. For each: test accuracy and the demographic parity difference,
    with bootstrap intervals. Accuracy is agreement with the *historical* labels — the biased ones."""
    from methodo.trust.mitigate import mitigate as compare

    m = compare(ctx.state["prep"], ctx.state["preds"], ctx.state["fairness"])
    rows = {r["name"]: {"accuracy": r["accuracy"], "accuracy_interval": r["accuracy_interval"],
                        "demographic_parity_difference": r["disparity"]["demographic_parity_difference"],
                        "interval": r["disparity_intervals"]["demographic_parity_difference"],
                        "selection_rate": r["selection_rate"]} for r in m["rows"]}
    base = rows["model"]
    for name in MITIGATIONS:
        rows[name]["accuracy_cost"] = base["accuracy"] - rows[name]["accuracy"]
        rows[name]["disparity_kept"] = (rows[name]["demographic_parity_difference"]
                                        / max(base["demographic_parity_difference"], 1e-9))
    return ctx.record(mitigation=rows, skipped=m["skipped"], chosen=CHOSEN)


@step
def plot(ctx: LabContext):
    """**Figure.** Left: the test selection rate of women and men for the model and each mitigation, with the
    demographic parity difference and the accuracy. Right: the model's selection rate by gender and club — the
    proxy at work."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    mit = n["mitigation"]
    names = ["model"] + MITIGATIONS
    fig, (a, b) = plt.subplots(1, 2, figsize=(10.5, 3.9), gridspec_kw={"width_ratios": [1.6, 1]})
    w = 0.38
    x = np.arange(len(names))
    for k, (g, color) in enumerate((("F", "#cc6677"), ("M", "#4477aa"))):
        a.bar(x + (k - 0.5) * w, [mit[r]["selection_rate"][g] for r in names], w, color=color,
              label={"F": "women", "M": "men"}[g])
    a.set_xticks(x, [f"{r.replace('_', ' ')}\nDP diff {mit[r]['demographic_parity_difference']:.3f}\n"
                     f"accuracy {mit[r]['accuracy']:.3f}" for r in names], fontsize=8)
    a.set_ylabel("test selection rate (predicted hired)")
    a.set_ylim(0, 0.8)
    a.legend(fontsize=8)
    s = n["selection_by_club"]
    keys = list(s)
    b.bar(range(len(keys)), [s[k]["selection_rate"] for k in keys], color=["#aa3377", "#ee99aa", "#4477aa"])
    b.set_xticks(range(len(keys)), [f"{k}\n(n={s[k]['n']})" for k in keys], fontsize=8)
    b.set_ylim(0, 0.8)
    b.set_title(f"the model, which never saw gender (club: rank {n['club_rank']} in importance)", fontsize=8)
    fig.tight_layout()
    ctx.figure(fig, "discrimination")


def conclude(ctx: LabContext):
    n = ctx.numbers
    g, d, di = n["test_groups"], n["test_disparity"], n["test_disparity_intervals"]
    mit, s = n["mitigation"], n["selection_by_club"]
    chosen, other = mit[CHOSEN], mit[next(m for m in MITIGATIONS if m != CHOSEN)]
    gap, iv = n["label_bias"]["gap"]["F"], n["label_bias"]["interval"]["F"]
    checks = {
        "the fairness stage finds group_disparity (interval of the parity gap excludes 0)":
            "group_disparity" in n["findings"] and di["demographic_parity_difference"][0] > 0,
        "it names womens_club as the proxy of gender": n["proxy_feature_named"] == "womens_club",
        "it finds the label bias": "label_bias" in n["findings"],
        "the proxy at work: women in the club are selected ≥ 5 points less than women outside it":
            s["F, no club"]["selection_rate"] - s["F, club"]["selection_rate"] >= 0.05,
        f"{CHOSEN} at least halves the demographic parity difference": chosen["disparity_kept"] <= 0.5,
        f"{CHOSEN} costs at most 3 points of accuracy": chosen["accuracy_cost"] <= 0.03,
    }
    sentence = (f"Without seeing gender, the model selects {g['F']['selection_rate']:.3f} of the women and "
                f"{g['M']['selection_rate']:.3f} of the men on test (demographic parity difference "
                f"{d['demographic_parity_difference']:.3f} [{di['demographic_parity_difference'][0]:.3f}, "
                f"{di['demographic_parity_difference'][1]:.3f}]; methodo finds {', '.join(n['findings'])}): the "
                f"proxy womens_club (ROC AUC {n['top_proxy']['auc']:.2f} for gender) carries it — women in the club "
                f"{s['F, club']['selection_rate']:.3f}, outside it {s['F, no club']['selection_rate']:.3f} — and the "
                f"labels give women {abs(gap):.3f} fewer positives at equal features [{iv[0]:.3f}, {iv[1]:.3f}]. "
                f"{CHOSEN.capitalize()} brings the difference to {chosen['demographic_parity_difference']:.3f} for an "
                f"accuracy of {chosen['accuracy']:.3f} (model {mit['model']['accuracy']:.3f}, cost "
                f"{100 * chosen['accuracy_cost']:.1f} points); the threshold optimizer to "
                f"{other['demographic_parity_difference']:.3f} at {other['accuracy']:.3f}.")
    return sentence, checks


LAB = Lab("discrimination", "Discrimination: a biased hiring table, audited and mitigated",
          "A model trained on biased hiring decisions, without the gender column, still selects fewer women: "
          "methodo finds the disparity, names the proxy feature (a women's club) and the label bias, and "
          "reweighing at least halves the disparity for at most 3 points of accuracy.",
          (make_data, audit, proxy, mitigate, plot), conclude,
          intro="Leaving the sensitive column out is not enough when another feature stands for it, and labels "
                "made by past decisions teach the model those decisions. Measure who the errors fall on, find "
                "the channel, then mitigate — and state what it costs.")
