"""Each check fires on a constructed case and stays silent on a clean one."""

from __future__ import annotations

import numpy as np
import pytest

from methodo.diagnose import FINDINGS, Facts, diagnose
from methodo.findings import wilson


def _hist(train, val, acc_tr=None, acc_va=None):
    rows = []
    for i, (t, v) in enumerate(zip(train, val)):
        rows.append({"epoch": i + 1, "train_loss": t, "val_loss": v,
                     "train_accuracy": acc_tr[i] if acc_tr else 0.99, "val_accuracy": acc_va[i] if acc_va else 0.97})
    return rows


CLEAN = Facts(
    task="classification",
    history=_hist([1.0, 0.5, 0.3, 0.2], [1.0, 0.6, 0.4, 0.35]),
    metrics={"test": {"accuracy": 0.95}}, baselines={"most_frequent": {"accuracy": 0.4}},
    test_pred=np.array([0, 1, 2, 0, 1, 2, 0, 1]), test_true=np.array([0, 1, 2, 0, 1, 2, 1, 1]),
)


def test_clean_run_has_no_findings():
    assert diagnose(CLEAN) == []


def test_overfitting_fires_with_numbers():
    f = Facts(task="classification", history=_hist([1.0, 0.5, 0.2, 0.1, 0.05], [1.0, 0.6, 0.5, 0.7, 0.9]))
    (found,) = [x for x in diagnose(f) if x.id == "overfitting"]
    assert found.evidence["best_epoch"] == 3 and found.evidence["val_loss_rise_pct"] == 80.0
    assert found.severity == "high" and "regularize" in found.action


def test_underfitting_fires_when_train_error_high_and_close_to_val():
    f = Facts(task="classification", history=_hist([2.0, 1.9], [2.0, 1.95], [0.30, 0.35], [0.31, 0.33]))
    (found,) = diagnose(f)
    assert found.id == "underfitting" and found.evidence["train_error"] == 0.65


def test_underfitting_regression_uses_r2():
    f = Facts(task="regression", history=[{"epoch": 1, "train_loss": 1, "val_loss": 1}],
              metrics={"train": {"r2": 0.2}, "val": {"r2": 0.15}})
    assert [x.id for x in diagnose(f)] == ["underfitting"]
    f.metrics = {"train": {"r2": 0.9}, "val": {"r2": 0.85}}
    assert diagnose(f) == []


def test_noise_or_bias_asks_a_flexible_reference():
    """High train error close to val: bias if a flexible model does clearly better on val, noise if not."""
    f = Facts(task="regression", history=[{"epoch": 1, "train_loss": 1, "val_loss": 1}],
              metrics={"train": {"r2": 0.55}, "val": {"r2": 0.52}},
              reference={"model": "HistGradientBoostingRegressor", "metric": "r2", "train": 0.80, "val": 0.53})
    (found,) = diagnose(f)
    assert found.id == "noise_floor" and found.severity == "low"
    sure = found.evidence.pop("certainty")
    assert found.evidence == {"train_r2": 0.55, "val_r2": 0.52, "reference_train_r2": 0.8, "reference_val_r2": 0.53}
    assert sure["method"] == "threshold rule" and "R²" in sure["statement"]
    f.reference = {**f.reference, "val": 0.90}  # the reference finds what the network misses: bias
    (found,) = diagnose(f)
    assert found.id == "underfitting" and found.evidence["reference_val_r2"] == 0.9
    f.reference = None  # no reference (images, text): the old rule alone
    assert [x.id for x in diagnose(f)] == ["underfitting"]
    f.metrics = {"train": {"r2": 0.9}, "val": {"r2": 0.85}}  # no high error: neither
    f.reference = {"model": "x", "metric": "r2", "train": 0.9, "val": 0.8}
    assert diagnose(f) == []
    c = Facts(task="classification", history=_hist([2.0, 1.9], [2.0, 1.95], [0.30, 0.70], [0.31, 0.69]),
              reference={"model": "HistGradientBoostingClassifier", "metric": "accuracy", "train": 0.9, "val": 0.70})
    assert [x.id for x in diagnose(c)] == ["noise_floor"]
    c.reference = {**c.reference, "val": 0.95}
    assert [x.id for x in diagnose(c)] == ["underfitting"]


def test_constant_predictions_fires_for_a_cat_says_cat_model():
    f = Facts(task="classification", test_pred=np.zeros(50, int), test_true=np.arange(50) % 3)
    (found,) = diagnose(f)
    assert found.id == "constant_predictions" and found.severity == "critical"
    assert found.evidence["predicted_share"] == 1.0
    # a truly 97%-one-class test set predicted constant is the imbalance trap, not this finding
    f.test_true = np.array([0] * 97 + [1] * 3)
    f.test_pred = np.zeros(100, int)
    assert diagnose(f) == []


def test_not_better_than_baseline():
    f = Facts(task="classification", metrics={"test": {"accuracy": 0.90}},
              baselines={"most_frequent": {"accuracy": 0.90}, "uniform": {"accuracy": 0.5}})
    (found,) = diagnose(f)
    assert found.id == "not_better_than_baseline" and found.evidence["baseline"] == "most_frequent"
    f = Facts(task="regression", metrics={"test": {"rmse": 10.0}}, baselines={"mean": {"rmse": 12.0}})
    assert diagnose(f) == []
    f.metrics["test"]["rmse"] = 11.95
    assert [x.id for x in diagnose(f)] == ["not_better_than_baseline"]


def test_findings_are_ordered_by_severity_and_serializable():
    import json

    f = Facts(task="classification", history=_hist([2.0, 1.9, 1.8, 1.7, 1.6], [1.9, 1.8, 2.3, 2.4, 2.6],
                                                     [0.3] * 5, [0.3] * 5),
              test_pred=np.zeros(30, int), test_true=np.arange(30) % 3)
    found = diagnose(f)
    assert [x.severity for x in found] == sorted([x.severity for x in found],
                                                  key=["critical", "high", "medium"].index)
    for x in found:
        d = json.loads(json.dumps(x.to_dict()))
        assert set(d) == {"id", "severity", "title", "evidence", "action"}


@pytest.mark.parametrize("name", FINDINGS.names())
def test_every_finding_has_help(name):
    assert len(FINDINGS.entry(name).help) > 10


def test_no_signal_fires_on_chance_agreement_with_varied_predictions():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    f = Facts(task="classification", metrics={"test": {"cohen_kappa": 0.01}, "train": {"accuracy": 0.99}},
              test_pred=pred, test_true=y, intervals={"cohen_kappa": [-0.07, 0.08]})
    (found,) = [x for x in diagnose(f) if x.id == "no_signal"]
    assert "memorized" in found.title and found.severity == "critical"
    f.metrics["test"]["cohen_kappa"] = 0.6
    f.intervals = {"cohen_kappa": [0.5, 0.7]}
    assert not [x for x in diagnose(f) if x.id == "no_signal"]


def test_lr_too_high_and_too_low():
    hi = Facts(task="classification", history=_hist([1.0, 1.8, 0.9, 2.5, 1.2, 3.0], [1.0] * 6, [0.95] * 6, [0.95] * 6))
    assert "lr_too_high" in [x.id for x in diagnose(hi)]
    lo = Facts(task="classification", history=_hist([2.30, 2.29, 2.28, 2.27, 2.26], [2.3] * 5, [0.12] * 5, [0.11] * 5), lr=1e-6)
    ids = [x.id for x in diagnose(lo)]
    assert "lr_too_low" in ids and "lr_too_high" not in ids
    assert [x.id for x in diagnose(CLEAN)] == []


def _flipped_facts(flipped: list[int]) -> Facts:
    """200 rows of 3 classes; the model gives 0.96 to the true class; the rows ``flipped`` carry a wrong label."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = np.full((200, 3), 0.02)
    p[np.arange(200), y] = 0.96
    for i in flipped:  # the model is confident of the true class; the recorded label is wrong
        y[i] = (y[i] + 1) % 3
    return Facts(task="classification", oos_proba=p, oos_true=y, oos_rows=np.arange(1000, 1200),
                 class_names=list("abc"))


def test_label_errors_finds_the_flipped_rows():
    flipped = [5, 17, 42, 60, 77, 91, 120, 150, 170, 199]
    f = _flipped_facts(flipped)
    (found,) = diagnose(f)
    assert found.id == "label_errors" and found.evidence["suspects"] == 10
    top = [r["row"] for r in found.evidence["top"]]
    assert len(top) == 5 and set(top) <= {1000 + i for i in flipped}  # the most suspect five, all flipped
    # how sure: the Wilson interval of the suspects' share (10 of 200), above 1%
    sure = found.evidence["certainty"]
    assert sure["method"] == "wilson interval" and sure["interval"] == wilson(10, 200)
    assert 0.01 < sure["interval"][0] < 0.05 < sure["interval"][1]
    f.oos_true = f.oos_proba.argmax(1)
    assert diagnose(f) == []


def test_label_errors_are_silent_on_a_few_suspects():
    """3 suspects of 200 (1.5%) could be the hard rows any data has (Wilson 95% interval [0.5%, 4.3%] reaches
    below 1%): cleanlab still lists them, the finding says nothing."""
    from methodo.evaluate.label_issues import find_label_issues

    f = _flipped_facts([5, 17, 42])
    assert find_label_issues(f.oos_proba, f.oos_true).count == 3
    assert wilson(3, 200)[0] < 0.01
    assert diagnose(f) == []


def test_label_errors_are_silent_when_the_model_learned_nothing():
    """A model no better than always answering the majority class (a shuffled target, a broken LR) disagrees
    with many right labels: cleanlab lists suspects, but the finding does not blame the labels."""
    from methodo.evaluate.label_issues import find_label_issues

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3) * 0.3, 300)  # confident, random: agrees with a third of the labels
    f = Facts(task="classification", oos_proba=p, oos_true=y, oos_rows=np.arange(300), class_names=list("abc"))
    assert find_label_issues(p, y).count >= 30
    assert "label_errors" not in [x.id for x in diagnose(f)]


def test_miscalibrated_needs_high_ece_beyond_its_interval():
    f = Facts(task="classification", metrics={"test": {"ece": 0.25}}, intervals={"ece": [0.2, 0.3]})
    assert [x.id for x in diagnose(f)] == ["miscalibrated"]
    f.intervals = {"ece": [0.01, 0.3]}
    assert diagnose(f) == []
    f.metrics = {"test": {"ece": 0.03}}
    assert diagnose(f) == []


def test_not_better_than_baseline_uses_the_interval():
    f = Facts(task="classification", metrics={"test": {"accuracy": 0.93}}, baselines={"most_frequent": {"accuracy": 0.90}},
              intervals={"accuracy": [0.88, 0.97]})
    assert [x.id for x in diagnose(f)] == ["not_better_than_baseline"]
    f.intervals = {"accuracy": [0.91, 0.95]}
    assert diagnose(f) == []


def test_overfitting_needs_a_rise_beyond_the_validation_losss_noise():
    """The same curve (val loss 0.30 → 0.36, +20%) is overfitting when the mean validation loss is known to
    ±0.01 (z = 6), and noise when it is known to ±0.05 (z = 1.2, under the alarm at 2)."""
    hist = [{"epoch": e + 1, "train_loss": t, "val_loss": v}
            for e, (t, v) in enumerate(zip([1.0, 0.5, 0.3, 0.2, 0.1], [0.8, 0.4, 0.30, 0.33, 0.36]))]
    f = Facts(task="classification", history=hist, val_loss_se=0.01)
    (found,) = diagnose(f)
    sure = found.evidence["certainty"]
    assert found.id == "overfitting" and sure["method"] == "test" and sure["z"] == pytest.approx(6.0)
    assert sure["p_value"] == pytest.approx(0.5 * __import__("math").erfc(6 / 2 ** 0.5), rel=1e-2)
    f.val_loss_se = 0.05
    assert diagnose(f) == []
    f.val_loss_se = None  # unknown (other tasks): the plain 10% rule, said as such
    (found,) = diagnose(f)
    assert found.evidence["certainty"]["method"] == "threshold rule"


@pytest.mark.slow
@pytest.mark.parametrize("example", ["breast_cancer", "digits"])
def test_no_run_finding_fires_on_more_than_one_clean_seed_in_20(example, tmp_path):
    """Issue 12 item 5: on a clean control (a bundled example, 20 seeds: split and initialization), no
    run-stage finding fires on more than 1 seed in 20."""
    import methodo

    from conftest import EXAMPLES

    fired: dict[str, list[int]] = {}
    for seed in range(20):
        res = methodo.run(str(EXAMPLES / f"{example}.yaml"), [f"seed={seed}", "track.mlflow=false", "train.progress=false",
                                                       "explain.enabled=false", "train.threads=1"],
                          out=tmp_path / str(seed))
        for f in res.summary["findings"]:
            if FINDINGS.entry(f["id"]).meta.get("check"):  # run stage (data findings describe the data itself)
                fired.setdefault(f["id"], []).append(seed)
    assert all(len(seeds) <= 1 for seeds in fired.values()), fired
