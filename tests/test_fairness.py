"""Fairness (issue 17): sensitive columns, per-group metrics with intervals, disparities, the fairness findings
and the mitigations, on the planted-bias hiring table (examples/hiring.py)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from conftest import EXAMPLES, cli_inproc

_spec = importlib.util.spec_from_file_location("hiring", EXAMPLES / "hiring.py")
hiring = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hiring)


def _random_split(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    g = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2]).astype(object)
    p = np.clip(0.3 * y + 0.5 * rng.random(n) + 0.1 * (g == "a"), 0, 1)
    return y, np.c_[1 - p, p], g


def test_count_formulas_give_fairlearns_numbers():
    """The bootstrap computes every group metric from counts; with each row once it must be fairlearn's."""
    from fairlearn import metrics as fm

    from methodo.trust import fairness as F

    y, scores, g = _random_split()
    pred, p = F.decisions(scores)
    names, codes = np.unique(g.astype(str), return_inverse=True)
    m, d = F.from_counts(F.count_matrix(y, pred, p, codes, len(names)).sum(0, keepdims=True), len(names), binary=True)
    mf = F.metric_frame(y, pred, p, g, "g")
    for k in ("accuracy", "selection_rate", "tpr", "fpr", "precision", "calibration_gap"):
        assert m[k][0] == pytest.approx(mf.by_group[k].loc[list(names)].to_numpy(dtype=float)), k
    kw = {"sensitive_features": g}
    assert d["demographic_parity_difference"][0] == pytest.approx(fm.demographic_parity_difference(y, pred, **kw))
    assert d["demographic_parity_ratio"][0] == pytest.approx(fm.demographic_parity_ratio(y, pred, **kw))
    assert d["equalized_odds_difference"][0] == pytest.approx(fm.equalized_odds_difference(y, pred, **kw))
    assert d["equal_opportunity_difference"][0] == pytest.approx(fm.equal_opportunity_difference(y, pred, **kw))
    got = F.disparities(mf, binary=True)
    assert got["demographic_parity_difference"] == pytest.approx(fm.demographic_parity_difference(y, pred, **kw), abs=1e-6)
    assert got["equalized_odds_difference"] == pytest.approx(fm.equalized_odds_difference(y, pred, **kw), abs=1e-6)


def test_split_fairness_intervals_are_seeded_and_hold_the_point_values():
    from methodo.trust.fairness import split_fairness

    y, scores, g = _random_split()
    a = split_fairness(y, scores, g, "g", n_boot=200, seed=3, level=0.9)
    assert a == split_fairness(y, scores, g, "g", n_boot=200, seed=3, level=0.9)
    assert sum(v["n"] for v in a["groups"].values()) == len(y) == a["overall"]["n"]
    for grp, m in a["groups"].items():
        lo, hi = a["intervals"][grp]["accuracy"]
        assert lo <= m["accuracy"] <= hi
    lo, hi = a["disparity_intervals"]["demographic_parity_difference"]
    assert lo <= a["disparity"]["demographic_parity_difference"] <= hi
    # groups drawn alike: the interval of the gap holds zero (the bootstrap of max - min would not)
    p = np.random.default_rng(1).random(len(y))
    same = split_fairness(y, np.c_[1 - p, p], g, "g", n_boot=200, seed=3, level=0.95)
    for k in ("demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference"):
        lo, hi = same["disparity_intervals"][k]
        assert lo < 0 < hi, k
    # a group below min_group is left out of the disparities, and said so
    small = split_fairness(y, scores, g, "g", n_boot=0, seed=3, level=0.9, min_group=100)
    assert small["too_small"] == ["c"] and small["disparity_groups"] == ["a", "b"]


def test_label_bias_and_proxies_find_what_was_planted_and_nothing_else():
    from methodo.trust.fairness import label_bias, proxies

    def table(**kw):
        c = hiring.make(1400, seed=1, **kw)
        X = np.c_[c["years_experience"], c["test_score"], c["interview_score"], c["womens_club"]]
        return X, (c["hired"] == "yes").astype(int), c["gender"]

    names = ["years_experience", "test_score", "interview_score", "womens_club"]
    X, y, g = table()
    lb = label_bias(X, y, g, "gender", names, seed=0)
    assert lb["reference_group"] == "M" and lb["gap"]["F"] < -0.05 and lb["interval"]["F"][1] < 0
    assert proxies(X, names, g, "gender")[0]["feature"] == "womens_club"
    fair = label_bias(*table(penalty=0.0), "gender", names, seed=0)
    lo, hi = fair["interval"][next(iter(fair["interval"]))]
    assert lo < 0 < hi  # fair labels: the interval holds zero
    X2, _, g2 = table(club_share=(0.3, 0.3))
    assert max(p["auc"] for p in proxies(X2, names, g2, "gender")) < 0.6


def test_reweighing_makes_group_and_label_independent():
    from methodo.trust.mitigate import reweighing_weights

    y = np.array([1, 1, 1, 0, 1, 0, 0, 0])
    g = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    w = reweighing_weights(y, g)
    for grp in "ab":
        m = g == grp
        assert (w[m] * y[m]).sum() / w[m].sum() == pytest.approx((w * y).sum() / w.sum())


def _write_csv(tmp_path, rows=2000, **kw):
    path = tmp_path / "hiring.csv"
    hiring.write(str(path), rows, **kw)
    return path


def test_sensitive_columns_are_kept_out_of_the_features(tmp_path):
    from methodo.config import load_config
    from methodo.data import load_dataset
    from methodo.errors import DataError

    path = _write_csv(tmp_path, 300)
    cfg = load_config(EXAMPLES / "hiring.yaml", [f"data.path={path}"])
    ds = load_dataset(cfg.data)
    assert "gender" not in ds.feature_names + ds.cat_names and "age_band" not in ds.cat_names
    assert set(ds.sensitive) == {"gender", "age_band"} and set(ds.sensitive["gender"]) == {"F", "M"}
    both = load_dataset(load_config(EXAMPLES / "hiring.yaml", [f"data.path={path}", "data.sensitive_as_feature=true"]).data)
    assert "gender" in both.cat_names and list(both.sensitive["gender"]) == list(ds.sensitive["gender"])
    with pytest.raises(DataError, match=r"data.sensitive column 'sex' not found; columns: .*gender"):
        load_dataset(load_config(EXAMPLES / "hiring.yaml", [f"data.path={path}", "data.sensitive=[sex]"]).data)
    with pytest.raises(DataError, match="is the target"):
        load_dataset(load_config(EXAMPLES / "hiring.yaml", [f"data.path={path}", "data.sensitive=[hired]"]).data)


def test_bad_fairness_config_is_one_error_line(capsys, tmp_path):
    code, out, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), "fairness.mitigation=[reweighing]",
                                "track.mlflow=false", "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith("error: fairness.mitigation:") and "data.sensitive" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "hiring.yaml"), "fairness.mitigation=[fair_magic]")
    assert code == 2 and "fairness.mitigation.0" in err and "reweighing" in err


@pytest.fixture(scope="module")
def hiring_run(tmp_path_factory):
    import methodo

    root = tmp_path_factory.mktemp("hiring")
    path = _write_csv(root)
    res = methodo.run(EXAMPLES / "hiring.yaml", [f"data.path={path}", "train.epochs=6", "evaluate.bootstrap=100",
                                                 "track.mlflow=false", "train.progress=false", "explain.enabled=false",
                                                 "train.threads=1"], out=root / "run")
    return res


def test_the_planted_bias_is_measured_found_and_mitigated(hiring_run):
    res = hiring_run
    fa = res.summary["fairness"]
    test = fa["attributes"]["gender"]["splits"]["test"]
    assert test["groups"]["F"]["n"] + test["groups"]["M"]["n"] == res.summary["data"]["splits"]["test"]["n"]
    # the labels penalize women, the model learns it through womens_club: fewer women selected
    assert test["groups"]["F"]["selection_rate"] < test["groups"]["M"]["selection_rate"]
    assert test["disparity"]["demographic_parity_difference"] > fa["bound"]
    found = {f["id"]: f for f in res.findings}
    assert found["group_disparity"]["evidence"]["attribute"] == "gender"
    assert found["group_underrepresented"]["evidence"]["groups"][0]["group"] == "over_60"
    assert found["proxy_feature"]["evidence"]["feature"] == "womens_club"
    assert found["label_bias"]["evidence"]["group"] == "F"
    for f in ("group_disparity", "label_bias", "proxy_feature", "group_underrepresented"):
        assert found[f]["evidence"]["certainty"]["statement"]
    rows = {r["name"]: r for r in fa["mitigation"]["rows"]}
    assert set(rows) == {"model", "reweighing", "threshold_optimizer", "logistic_regression",
                         "exponentiated_gradient", "penalty"}
    dp = {k: r["disparity"]["demographic_parity_difference"] for k, r in rows.items()}
    assert dp["reweighing"] < dp["model"] and dp["threshold_optimizer"] < dp["model"]
    assert dp["exponentiated_gradient"] < dp["logistic_regression"] and dp["penalty"] < dp["model"]
    for r in rows.values():  # side by side: accuracy with its interval
        assert r["accuracy_interval"][0] <= r["accuracy"] <= r["accuracy_interval"][1]
    html = (res.run_dir / "report.html").read_text()
    assert "<h2>Fairness</h2>" in html and 'id="fairness-mitigation"' in html and "Per-group metrics (test)" in html
    assert (res.run_dir / "figures" / "fairness.png").stat().st_size > 5000
    saved = json.loads((res.run_dir / "summary.json").read_text())["fairness"]
    assert saved["attributes"]["gender"]["splits"]["test"]["disparity"] == test["disparity"]


def test_fairness_metrics_go_to_mlflow_names():
    from methodo.trust.fairness import tracked_metrics

    out = tracked_metrics({"attributes": {"age band": {"splits": {"test": {
        "disparity": {"demographic_parity_difference": 0.2, "demographic_parity_ratio": None},
        "groups": {"60+": {"accuracy": 0.7, "selection_rate": 0.1}}}}}}})
    assert out == {"fairness_age band_demographic_parity_difference": 0.2, "fairness_age band_60__accuracy": 0.7,
                   "fairness_age band_60__selection_rate": 0.1}


def test_report_refuses_a_tampered_fairness_section_naming_the_key(hiring_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(hiring_run.run_dir, copy)
    s = json.loads((copy / "summary.json").read_text())
    s["fairness"]["attributes"]["gender"]["splits"]["test"]["groups"]["F"]["n"] = "<script>"
    (copy / "summary.json").write_text(json.dumps(s))
    code, _, err = cli_inproc(capsys, "report", str(copy))
    assert code == 2 and "fairness.attributes.gender.splits.test.groups.F.n" in err
