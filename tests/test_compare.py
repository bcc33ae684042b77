"""`methodo compare`: runs side by side, the config keys that differ, and which differences are real
(paired bootstrap on the same test rows, else interval overlap)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import EXAMPLES, cli_inproc
from methodo.experiments.compare import RunView, compare, paired_difference

FAST = ["train.progress=false", "explain.enabled=false", "evaluate.reference=false", "evaluate.bootstrap=50"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A trained iris MLP and one that barely trained (one epoch at a tiny LR), in one MLflow store."""
    from methodo.pipeline import run

    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    common = FAST + [f"track.tracking_uri={uri}", "track.experiment=cmp"]
    good = run(EXAMPLES / "iris.yaml", common + ["train.epochs=30"], out=root / "good").run_dir
    bad = run(EXAMPLES / "iris.yaml", common + ["train.epochs=1", "train.optimizer.lr=1e-5"], out=root / "bad").run_dir
    return good, bad, uri


def test_compare_run_dirs(two_runs, capsys, tmp_path):
    good, bad, _ = two_runs
    code, out, err = cli_inproc(capsys, "compare", str(good), str(bad), "--html", "cmp.html")
    assert code == 0, err
    lines = out.splitlines()
    head = lines[0].split()
    assert head[:3] == ["run", "train.epochs", "train.optimizer.lr"]  # only the keys that differ
    assert "accuracy" in head and "seed" not in head
    assert lines[1].startswith("good (best)") and "—" in lines[1]
    assert lines[2].startswith("bad ") and "significant (paired bootstrap [" in lines[2]
    assert "validation loss per epoch" in out
    page = (tmp_path / "cmp.html").read_text()
    assert page.count("<tr>") == 3 and "data:image/png;base64," in page and "paired bootstrap" in page
    code, _, err = cli_inproc(capsys, "compare", str(good), "--html", "cmp.html")
    assert code == 2 and "--html cmp.html: exists" in err


def test_compare_experiment(two_runs, capsys):
    _, _, uri = two_runs
    code, out, err = cli_inproc(capsys, "compare", "--experiment", "cmp", "--tracking-uri", uri,
                                "--metrics", "log_loss,accuracy")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[-6:-4] == ["log_loss", "accuracy"]
    assert lines[1].startswith("good (best)")  # lower log loss is better
    code, _, err = cli_inproc(capsys, "compare", "--experiment", "nope", "--tracking-uri", uri)
    assert code == 2 and "--experiment nope: no such MLflow experiment; experiments:" in err and "cmp" in err


def test_bad_arguments(two_runs, capsys):
    good, _, _ = two_runs
    code, _, err = cli_inproc(capsys, "compare")
    assert code == 2 and "give RUN_DIR... or --experiment NAME" in err
    code, _, err = cli_inproc(capsys, "compare", str(good), "--metrics", "nonsense")
    assert code == 2 and "--metrics nonsense: not a test metric of good; shared metrics:" in err
    code, _, err = cli_inproc(capsys, "compare", "missing-dir")
    assert code == 2 and "missing-dir: not a run dir" in err


def _view(label, correct, *, rows=None, task="classification", intervals=None):
    """A run whose test predictions are right on the rows where ``correct`` is True (2 classes)."""
    y = np.array([i % 2 for i in range(len(correct))])
    scores = np.where(np.asarray(correct)[:, None], np.eye(2)[y], np.eye(2)[1 - y]).astype(np.float32)
    rows = np.arange(len(y)) if rows is None else rows
    return RunView(label=label, source=label, task=task, params={}, test={"accuracy": float(np.mean(correct))},
                   intervals=intervals or {}, predictions=(rows, scores, y))


def test_paired_bootstrap_and_fallbacks():
    n = 200
    a = _view("a", [True] * n)
    same = _view("same", [True] * n)
    assert paired_difference(a, same, "accuracy") == [0.0, 0.0]
    worse = _view("worse", [i % 10 != 0 for i in range(n)])  # 10 % wrong: clearly worse on 200 rows
    lo, hi = paired_difference(a, worse, "accuracy")
    assert hi < 0 and lo == pytest.approx(-0.1, abs=0.06)
    slightly = _view("slightly", [i != 0 for i in range(n)])  # one row wrong: within noise
    lo, hi = paired_difference(a, slightly, "accuracy")
    assert lo < 0 <= hi
    shuffled = _view("other rows", [True] * n, rows=np.arange(n) + 1000)
    assert paired_difference(a, shuffled, "accuracy") is None  # not the same test rows: no pairing
    cmp = compare([_view("x", [True] * n, intervals={"accuracy": [0.9, 1.0]}),
                   _view("y", [i % 2 == 0 for i in range(n)], rows=np.arange(n) + 1, intervals={"accuracy": [0.4, 0.6]}),
                   _view("z", [i % 3 != 0 for i in range(n)], rows=np.arange(n) + 1, intervals={"accuracy": [0.6, 0.95]})])
    assert cmp.best == 0
    assert [t["method"] for t in cmp.tests] == ["best", "interval overlap", "interval overlap"]
    assert [t["significant"] for t in cmp.tests] == [False, True, False]
    with pytest.raises(Exception, match="different tasks"):
        compare([_view("a", [True] * 4), _view("b", [True] * 4, task="regression")])
