"""`methodo diagnose RUN_DIR`: every finding family recomputed from a run dir alone equals the recorded one.

For each family a run is made where the finding fires (problems planted as in ``bench/diagnosis.py``, several
per run where they do not interfere), then ``methodo diagnose`` recomputes the findings from the run dir's
files (and the digest-checked data) and must find the same ids with the same evidence:

- data stage: exact duplicates across splits, target leakage, class imbalance, a constant feature, missing
  values (one planted table), with ``lr_too_low`` (SGD at 1e-5) in the same run;
- run stage: ``overfitting`` and ``label_errors`` (20% of breast_cancer's labels flipped, a wide MLP trained
  long), ``noise_floor`` (shuffled labels), ``lr_too_high`` (Adam at 0.1), ``miscalibrated`` (label smoothing
  0.6 on digits), ``no_signal`` of a regression (a shuffled diabetes target: numbers re-derived from the
  6-digit predictions, compared within one unit in the last digit written);
- trust: the fairness findings of ``examples/hiring.py``'s table (5 epochs, 50 bootstrap resamples, no
  mitigation); robustness needs torchattacks and image attacks, left to ``tests/test_trust_robustness.py``
  (its findings are recomputed by the same code, from ``summary.json`` → ``robustness``);
- transfer: ``pretrained_not_helping`` on iris (a run dir pretrained at a negligible LR reused and compared
  with scratch).

Then a tampered run dir (one epoch's validation loss, one test prediction, one label score) must exit 3 naming
the finding that differs, and bad input (not a run dir, a damaged file, an older run dir, other data) must be
one ``error:`` line, exit 2, nothing written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, cli_inproc

# Every run: small, one thread, no tracking, no explanations, few bootstrap resamples, no progress bar.
COMMON = """seed: {seed}
data: {{source: csv, path: {path}, target: label{data}}}
track: {{mlflow: false}}
explain: {{enabled: false}}
evaluate: {{bootstrap: 50}}
"""
CANCER_MLP = """model: {name: mlp, hidden: [64, 32], dropout: 0.2}
train: {epochs: 20, batch_size: 32, optimizer: {name: adamw, lr: 0.001, weight_decay: 0.01},
        threads: 1, progress: false}
"""


def _table(path: Path, X: np.ndarray, y, names: list[str], target: str = "label") -> Path:
    import pandas as pd

    df = pd.DataFrame(X, columns=names)
    df[target] = y
    df.to_csv(path, index=False, na_rep="")
    return path


def _cancer():
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return d.data.astype(np.float64), (1 - d.target).astype(int), [f"f{i}" for i in range(d.data.shape[1])]


def _run(root: Path, name: str, X, y, names, body: str, *, seed: int = 0, data: str = "", overrides=()):
    import methodo

    csv = _table(root / f"{name}.csv", X, y, names)
    cfg = root / f"{name}.yaml"
    cfg.write_text(f"name: {name}\n" + COMMON.format(seed=seed, path=csv, data=data) + body)
    return methodo.run(str(cfg), list(overrides), out=root / name)


def _ids(res) -> set[str]:
    return {f["id"] for f in res.summary["findings"]}


# --------------------------------------------------------------------------- the runs (one per module)


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """breast_cancer with planted data problems: the malignant class cut to 1:5, 40 rows copied, a column equal
    to the label, a constant column, 5% of two columns blank (imputed); and SGD at lr 1e-5 (lr_too_low)."""
    root = tmp_path_factory.mktemp("data")
    X, y, names = _cancer()
    rng = np.random.default_rng(0)
    keep = np.sort(np.concatenate([np.flatnonzero(y == 0), rng.choice(np.flatnonzero(y == 1), 71, replace=False)]))
    X, y = X[keep], y[keep]
    src = np.sort(rng.choice(len(X), 40, replace=False))
    X, y = np.concatenate([X, X[src]]), np.concatenate([y, y[src]])
    X = np.c_[X, y.astype(np.float64), np.ones(len(y))]
    for j in (3, 7):
        X[rng.choice(len(X), int(0.05 * len(X)), replace=False), j] = np.nan
    body = """model: {name: mlp, hidden: [32]}
train: {epochs: 6, batch_size: 32, optimizer: {name: sgd, lr: 0.00001}, early_stopping: null, threads: 1,
        progress: false}
"""
    return _run(root, "planted", X, y, [*names, "leak", "const"], body, data=", features: [impute]")


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    """breast_cancer with 20% of its labels flipped, a 2×256 MLP without dropout or early stopping for 40 epochs:
    overfitting, label_errors and miscalibrated."""
    root = tmp_path_factory.mktemp("noisy")
    X, y, names = _cancer()
    rows = np.random.default_rng(0).choice(len(y), int(0.2 * len(y)), replace=False)
    y = y.copy()
    y[rows] = 1 - y[rows]
    body = """model: {name: mlp, hidden: [256, 256], dropout: 0.0}
train: {epochs: 40, batch_size: 32, optimizer: {name: adam, lr: 0.001}, early_stopping: null, threads: 1,
        progress: false}
"""
    return _run(root, "noisy", X, y, names, body)


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory):
    """diabetes with its target shuffled: no_signal (Fisher z-test on the test predictions) and noise_floor."""
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("regression")
    d = load_diabetes()
    body = """task: regression
model: {name: mlp, hidden: [32]}
train: {epochs: 10, batch_size: 32, optimizer: {name: adam, lr: 0.003}, threads: 1, progress: false}
"""
    return _run(root, "shuffled", d.data, np.random.default_rng(0).permutation(d.target),
                [f"x{i}" for i in range(10)], body)


@pytest.fixture(scope="module")
def hiring_run(tmp_path_factory):
    """examples/hiring.py's table (planted label bias, a proxy, a small group), 5 epochs, no mitigation."""
    import importlib.util

    import methodo

    root = tmp_path_factory.mktemp("hiring")
    spec = importlib.util.spec_from_file_location("hiring_example", EXAMPLES / "hiring.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write(str(root / "hiring.csv"))
    return methodo.run(str(EXAMPLES / "hiring.yaml"), [
        f"data.path={root / 'hiring.csv'}", "train.epochs=5", "fairness.mitigation=[]", "evaluate.bootstrap=50",
        "track.mlflow=false", "explain.enabled=false", "train.threads=1", "train.progress=false"], out=root / "run")


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory):
    """iris: a run dir pretrained one epoch at lr 1e-6 (no better than its random start), fine-tuned and compared
    with the same model from scratch: pretrained_not_helping."""
    import methodo

    root = tmp_path_factory.mktemp("transfer")
    fast = ["track.mlflow=false", "explain.enabled=false", "train.threads=1", "train.progress=false",
            "evaluate.bootstrap=50"]
    iris = str(EXAMPLES / "iris.yaml")
    methodo.run(iris, fast + ["train.epochs=1", "train.optimizer.lr=0.000001"], out=root / "pre")
    return methodo.run(iris, fast + ["train.epochs=5", f"model.pretrained={root / 'pre'}",
                                     "transfer.strategy=finetune", "transfer.compare_scratch=true"], out=root / "ft")


def _diagnose(capsys, run_dir, *args) -> tuple[int, str, str]:
    return cli_inproc(capsys, "diagnose", str(run_dir), *args)


def _recomputed(capsys, res, tmp_path, *args) -> dict:
    """``methodo diagnose`` on the run: exit 0, the verdict line, and the --out JSON."""
    out = tmp_path / "diagnosis.json"
    code, stdout, err = _diagnose(capsys, res.run_dir, "--out", str(out), *args)
    assert code == 0, (stdout, err)
    rep = json.loads(out.read_text())
    n = len(res.summary["findings"])
    assert f"verdict: {n} finding{'s' * (n != 1)} recomputed from the run dir: all equal to the recorded ones" in stdout
    assert rep["equal"] is True and rep["differences"] == []
    rep["stdout"] = stdout
    return rep


def _same_evidence(rep: dict, res, ids) -> None:
    """The recomputed findings are the recorded ones, field for field, and include ``ids``."""
    now = {f["id"]: f for f in rep["findings"]}
    recorded = {f["id"]: f for f in res.summary["findings"]}
    assert set(ids) <= set(now), (sorted(now), sorted(ids))
    assert set(now) == set(recorded)
    for i in ids:
        assert now[i] == json.loads(json.dumps(recorded[i], default=str)), i


def test_data_stage_findings_are_recomputed_from_the_run_dir(data_run, capsys, tmp_path):
    ids = {"duplicates_across_splits", "target_leakage", "class_imbalance", "constant_feature", "missing_values",
           "lr_too_low"}
    assert ids <= _ids(data_run)
    rep = _recomputed(capsys, data_run, tmp_path)
    _same_evidence(rep, data_run, ids)
    assert rep["files"][:3] == ["summary.json", "config.yaml", "splits.csv"]
    assert rep["data"]["digest"] == data_run.summary["data"]["digest"]


def test_run_stage_findings_overfitting_label_errors_miscalibrated(noisy_run, capsys, tmp_path):
    ids = {"overfitting", "label_errors", "miscalibrated"}
    assert ids <= _ids(noisy_run)
    rep = _recomputed(capsys, noisy_run, tmp_path)
    _same_evidence(rep, noisy_run, ids)
    found = {f["id"]: f for f in rep["findings"]}
    # overfitting was decided by the z-test against the recorded standard error; label_errors by cleanlab over
    # label_scores.csv, whose suspects are those of label_issues.csv
    sure = found["overfitting"]["evidence"]["certainty"]
    assert sure["method"] == "test" and sure["standard_error"] == round(noisy_run.summary["diagnosis"]["val_loss_se"], 6)
    assert "label_scores.csv" in rep["files"]
    suspects = (noisy_run.run_dir / "label_issues.csv").read_text().splitlines()[1:]
    assert found["label_errors"]["evidence"]["suspects"] == len(suspects) > 0
    assert [r["row"] for r in found["label_errors"]["evidence"]["top"]] == [int(x.split(",")[0]) for x in suspects[:5]]
    assert found["label_errors"]["evidence"]["top"][0]["inputs"]  # the suspects' feature values, from the data


def test_regression_noise_floor_and_no_signal_within_the_last_written_digit(regression_run, capsys, tmp_path):
    ids = {"noise_floor", "no_signal"}
    assert ids <= _ids(regression_run)
    rep = _recomputed(capsys, regression_run, tmp_path)
    _same_evidence(rep, regression_run, {"noise_floor"})
    assert rep["tolerance"]["findings"] == ["constant_predictions", "no_signal"]
    now = {f["id"]: f for f in rep["findings"]}["no_signal"]["evidence"]
    was = {f["id"]: f for f in regression_run.summary["findings"]}["no_signal"]["evidence"]
    assert abs(now["correlation"] - was["correlation"]) <= 1e-4 and now["test_r2"] == was["test_r2"]
    assert "(no_signal within one unit in the last digit written: re-derived from the 6-digit values of " \
           "predictions_test.csv)" in rep["stdout"]


def test_trust_findings_are_recomputed_from_the_fairness_section(hiring_run, capsys, tmp_path):
    ids = {"group_disparity", "group_underrepresented", "proxy_feature", "label_bias"}
    assert ids <= _ids(hiring_run)
    _same_evidence(_recomputed(capsys, hiring_run, tmp_path), hiring_run, ids)


def test_transfer_finding_is_recomputed_from_the_transfer_section(transfer_run, capsys, tmp_path):
    assert "pretrained_not_helping" in _ids(transfer_run)
    _same_evidence(_recomputed(capsys, transfer_run, tmp_path), transfer_run, {"pretrained_not_helping"})


# --------------------------------------------------------------------------- a tampered run dir: exit 3


def _copy(res, tmp_path) -> Path:
    return Path(shutil.copytree(res.run_dir, tmp_path / "copy"))


def _differs(capsys, run_dir, finding: str, *args) -> str:
    code, out, err = _diagnose(capsys, run_dir, *args)
    assert code == 3, (out, err)
    verdict = [line for line in out.splitlines() if line.startswith("verdict: ")]
    assert len(verdict) == 1 and "differ" in verdict[0] and finding in verdict[0], verdict
    assert err.startswith("failed: ") and len(err.strip().splitlines()) == 1
    return verdict[0]


def test_an_edited_metric_is_named_by_the_finding_that_differs(noisy_run, capsys, tmp_path):
    run_dir = _copy(noisy_run, tmp_path)
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    head = lines[0].split(",")
    last = lines[-1].split(",")
    last[head.index("val_loss")] = repr(float(last[head.index("val_loss")]) * 1.5)
    (run_dir / "metrics.csv").write_text("\r\n".join(lines[:-1] + [",".join(last)]) + "\r\n")
    out = tmp_path / "d.json"
    verdict = _differs(capsys, run_dir, "overfitting", "--out", str(out))
    assert "evidence.last_val_loss" in verdict
    rep = json.loads(out.read_text())
    assert rep["equal"] is False and {d["id"] for d in rep["differences"]} == {"overfitting"}


def test_an_edited_test_prediction_is_named_by_the_finding_that_differs(regression_run, capsys, tmp_path):
    run_dir = _copy(regression_run, tmp_path)
    path = run_dir / "predictions_test.csv"
    lines = path.read_text().splitlines()
    row = lines[1].split(",")
    row[2] = "1000"  # one test prediction far from every other
    path.write_text("\r\n".join([lines[0], ",".join(row), *lines[2:]]) + "\r\n")
    _differs(capsys, run_dir, "no_signal")


def test_an_edited_label_score_is_named_by_label_errors(noisy_run, capsys, tmp_path):
    run_dir = _copy(noisy_run, tmp_path)
    top = (run_dir / "label_issues.csv").read_text().splitlines()[1].split(",")[0]
    path = run_dir / "label_scores.csv"
    lines = path.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.split(",")[0] == top)
    row = lines[i].split(",")
    row[2:] = ["0.5", "0.5"]  # the most suspect row's scores: no longer confidently another class
    lines[i] = ",".join(row)
    path.write_text("\r\n".join(lines) + "\r\n")
    _differs(capsys, run_dir, "label_errors")


# --------------------------------------------------------------------------- bad input: exit 2, one line


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(capsys, run_dir, *args, says: tuple[str, ...]) -> str:
    before = _snapshot(Path(run_dir)) if Path(run_dir).is_dir() else None
    out = Path("refused.json")
    code, stdout, err = _diagnose(capsys, run_dir, *args, "--out", str(out))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, stdout, err)
    assert "Traceback" not in err and not out.exists()
    for s in says:
        assert s in lines[0], (s, lines[0])
    if before is not None:
        assert _snapshot(Path(run_dir)) == before  # the run dir is only read
    return lines[0]


def test_a_folder_that_is_not_a_run_dir(capsys, tmp_path):
    _refused(capsys, tmp_path / "nowhere", says=("nowhere", "not a run dir (no such folder)"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    _refused(capsys, tmp_path / "plain", says=("plain", "not a run dir (no summary.json)"))


@pytest.mark.parametrize("damage, says", [
    ("summary.json", ("summary.json", "not valid JSON")),
    ("splits.csv", ("splits.csv", "not a CSV file methodo wrote")),
    ("metrics.csv", ("metrics.csv", "line 3", "'val_loss'", "is not a number")),
    ("predictions_test.csv", ("predictions_test.csv", "no column 'predicted'")),
    ("label_scores.csv", ("label_scores.csv", "score columns")),
    ("monitor.json", ("monitor.json", "not a list of epoch records")),
])
def test_a_damaged_file_is_named(data_run, capsys, tmp_path, damage, says):
    run_dir = _copy(data_run, tmp_path)
    path = run_dir / damage
    text = path.read_text()
    if damage == "summary.json":
        text = text[: len(text) // 2]
    elif damage == "splits.csv":
        lines = text.splitlines()
        text = "\r\n".join([lines[0], "three," + lines[1].split(",")[1], *lines[2:]]) + "\r\n"
    elif damage == "metrics.csv":
        lines = text.splitlines()
        head = lines[0].split(",")
        row = lines[2].split(",")
        row[head.index("val_loss")] = "low"
        text = "\r\n".join([*lines[:2], ",".join(row), *lines[3:]]) + "\r\n"
    elif damage == "predictions_test.csv":
        text = text.replace("predicted", "guess", 1)
    elif damage == "label_scores.csv":
        text = "\r\n".join(",".join(line.split(",")[:-1]) for line in text.splitlines()) + "\r\n"
    else:
        text = json.dumps({"epoch": 1})
    path.write_text(text)
    _refused(capsys, run_dir, says=says)


def test_a_run_dir_of_an_older_methodo_says_what_is_missing(data_run, capsys, tmp_path):
    run_dir = _copy(data_run, tmp_path)
    (run_dir / "label_scores.csv").unlink()
    _refused(capsys, run_dir, says=("label_scores.csv", "missing", "older methodo", "methodo reproduce"))
    summary = json.loads((data_run.run_dir / "summary.json").read_text())
    del summary["diagnosis"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    _refused(capsys, run_dir, says=("summary.json", "no diagnosis section", "older methodo"))
    (run_dir / "splits.csv").unlink()
    (run_dir / "summary.json").write_text((data_run.run_dir / "summary.json").read_text())
    _refused(capsys, run_dir, says=("splits.csv", "missing"))


def test_other_data_than_the_runs_is_refused_naming_both_digests(data_run, capsys, tmp_path):
    import yaml

    cfg = yaml.safe_load((data_run.run_dir / "config.yaml").read_text())
    lines = Path(cfg["data"]["path"]).read_text().splitlines()
    cells = lines[1].split(",")
    cells[0] = str(float(cells[0]) + 1)  # one value changed
    other = tmp_path / "other.csv"
    other.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    line = _refused(capsys, data_run.run_dir, "--data", str(other), says=("--data", "other.csv", "not the data"))
    digests = [w for w in line.replace(",", " ").split() if w.startswith("sha256:")]
    assert len(digests) == 2 and digests[0] != digests[1] and digests[1] == data_run.summary["data"]["digest"]
    # the same data under another name is accepted (the digest is of the data, not of the file)
    same = tmp_path / "same.csv"
    shutil.copy(cfg["data"]["path"], same)
    code, out, err = _diagnose(capsys, data_run.run_dir, "--data", str(same))
    assert code == 0, err


def test_an_existing_out_file_is_never_overwritten(data_run, capsys, tmp_path):
    out = tmp_path / "taken.json"
    out.write_text("mine")
    code, stdout, err = _diagnose(capsys, data_run.run_dir, "--out", str(out))
    assert code == 2 and err.startswith("error: --out") and "exists" in err and out.read_text() == "mine"


@pytest.mark.parametrize("change, says", [
    ({"status": "running"}, ("did not finish", "'running'", "--resume")),
    ({"kfold": {"folds": 2, "runs": []}}, ("a k-fold run", "folds/fold-1")),
    ({"task": "segmentation"}, ("segmentation", "per-pixel test predictions")),
])
def test_a_run_whose_findings_the_run_dir_cannot_give_is_refused(data_run, capsys, tmp_path, change, says):
    run_dir = _copy(data_run, tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, **change}))
    _refused(capsys, run_dir, says=says)
