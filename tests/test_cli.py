"""The command line: listings, fast --help, report re-rendering, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import EXAMPLES, FAST, cli, cli_inproc


@pytest.mark.parametrize("what,expect", [
    ("datasets", ["digits", "breast_cancer", "wine", "iris", "diabetes", "csv"]),
    ("models", ["mlp", "cnn", "resnet"]),
    ("optimizers", ["adadelta", "adagrad", "adam", "adamw", "adamax", "asgd", "lbfgs", "nadam", "radam",
                    "rmsprop", "rprop", "sgd"]),
    ("schedulers", ["none", "step", "onecycle", "cosine", "plateau"]),
    ("metrics", ["accuracy", "balanced_accuracy", "roc_auc", "mae", "rmse", "r2"]),
    ("findings", ["overfitting", "underfitting", "non_finite_loss"]),
    ("tasks", ["classification", "regression", "segmentation", "language_modeling"]),
])
def test_list_prints_each_registry(what, expect):
    res = cli("list", what)
    assert res.returncode == 0
    names = [line.split()[0] for line in res.stdout.splitlines()]
    for e in expect:
        assert e in names, (e, res.stdout)
    assert all(len(line.split(None, 1)) == 2 for line in res.stdout.splitlines())  # every entry has a help text


def test_help_imports_no_heavy_library():
    code = ("import sys; from methodo.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'mlflow', 'sklearn', 'matplotlib', 'pandas', 'torchmetrics') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out


def test_report_rerenders_from_the_run_dir(tmp_path):
    res = cli("run", str(EXAMPLES / "iris.yaml"), *FAST, "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr
    report = tmp_path / "r" / "report.html"
    report.unlink()
    res = cli("report", str(tmp_path / "r"))
    assert res.returncode == 0 and report.is_file()
    html = report.read_text()
    assert 'id="metrics"' in html and 'id="class-counts"' in html and "data:image/png;base64," in html
    bad = cli("report", str(tmp_path))
    assert bad.returncode == 2 and "not a run dir" in bad.stderr


def test_resume_continues_a_run(tmp_path, capsys):
    out = tmp_path / "r"
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), *FAST, "train.early_stopping=null",
                              "evaluate.bootstrap=0", "--out", str(out))
    assert code == 0, err
    code, _, err = cli_inproc(capsys, "run", "--resume", str(out), "train.epochs=4")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 4 and summary["resumed"] is True
    assert list(summary["timings"])[:4] == ["config", "load", "prepare", "resume"]  # the checkpoints checked
    assert (out / "metrics.csv").read_text().count("\n") == 5  # header + 4 epochs
    code, _, err = cli_inproc(capsys, "run", "--resume", str(tmp_path))
    assert code == 2 and "not a run dir (no config.yaml)" in err
