"""`methodo reproduce`: a recorded run re-run from its config and seed gives the same numbers bit for
bit (from its run dir and from its MLflow run ID), and every difference (data, versions, metrics)
is named."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from conftest import EXAMPLES, cli_inproc
from methodo.record import RunRecord

# small and fast: no explanations, no reference model, few bootstrap resamples
FAST = ["train.epochs=2", "train.progress=false", "explain.enabled=false", "evaluate.reference=false",
        "evaluate.bootstrap=20"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """One finished iris run, tracked in its own SQLite MLflow store."""
    from methodo.pipeline import run

    root = tmp_path_factory.mktemp("recorded")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    here = os.getcwd()
    os.chdir(root)  # outside any git checkout, like the tests' own working folders
    try:
        res = run(EXAMPLES / "iris.yaml", FAST + [f"track.tracking_uri={uri}"], out=root / "run")
    finally:
        os.chdir(here)
    return res.run_dir, uri


def test_run_records_what_reproduce_checks(recorded):
    """Every run records the data's digest and the versions that can change its numbers."""
    run_dir, _ = recorded
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["data"]["digest"].startswith("sha256:") and len(s["data"]["digest"]) == 7 + 64
    for k in ("methodo", "torch", "numpy", "scikit-learn", "python", "platform", "torch_threads"):
        assert s["versions"][k], k


def test_reproduce_from_run_dir_and_mlflow_is_bit_exact(recorded, capsys, tmp_path):
    run_dir, uri = recorded
    code, out, err = cli_inproc(capsys, "reproduce", str(run_dir), "--out", "again")
    assert code == 0, err
    assert "verdict: identical" in out and "environment: same versions" in out
    rep = json.loads((tmp_path / "again" / "reproduction.json").read_text())
    assert rep["verdict"] == "identical" and rep["reproduced"] is True and rep["environment"] == []
    assert len(rep["metrics"]) > 20 and all(m["recorded"] == m["now"] and m["diff"] in (0, None) for m in rep["metrics"])
    old = json.loads((run_dir / "summary.json").read_text())
    new = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert new["metrics"] == old["metrics"] and new["data"]["digest"] == old["data"]["digest"]

    run_id = old["mlflow_run_id"]
    code, out, err = cli_inproc(capsys, "reproduce", run_id, "--tracking-uri", uri, "--out", "from-mlflow")
    assert code == 0, err
    assert f"reproduction of MLflow run {run_id}" in out and "verdict: identical" in out


def test_changed_data_is_named_and_fails(tmp_path, capsys):
    """A CSV changed after the run: the digest warning names it, the metrics differ, exit 3."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    rows = ["a,b,c,d,label"] + [",".join(f"{v:g}" for v in x) + f",{t}" for x, t in zip(X, y)]
    (tmp_path / "iris.csv").write_text("\n".join(rows) + "\n")
    cfg = ["data.source=csv", "data.path=iris.csv", "data.target=label", "track.mlflow=false"]
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), *FAST, *cfg, "--out", "first")
    assert code == 0, err
    rng = np.random.default_rng(0)
    X[rng.choice(len(X), 40, replace=False), 0] += 3.0  # one feature of 40 rows moved
    rows = ["a,b,c,d,label"] + [",".join(f"{v:g}" for v in x) + f",{t}" for x, t in zip(X, y)]
    (tmp_path / "iris.csv").write_text("\n".join(rows) + "\n")
    code, out, err = cli_inproc(capsys, "reproduce", "first", "--out", "second")
    assert code == 3
    assert "warning: data digest differs: recorded sha256:" in err
    assert "failed: not reproduced: first vs second" in err
    assert "verdict: differs" in out
    rep = json.loads((tmp_path / "second" / "reproduction.json").read_text())
    assert rep["reproduced"] is False and [d["what"] for d in rep["environment"]] == ["data digest"]
    assert any(m["diff"] not in (0, None) for m in rep["metrics"])


def _record(run_dir, **changes) -> RunRecord:
    data = json.loads((run_dir / "summary.json").read_text())
    for key, value in changes.items():
        node = data
        *path, last = key.split("/")
        for p in path:
            node = node[p]
        node[last] = value
    return RunRecord.parse(data)


def test_verdict_rules(recorded):
    """Same environment: only bit-equal numbers pass. Another environment: within the tolerance."""
    from methodo.experiments.reproduce import compare_metrics, environment_differences, verdict

    run_dir, _ = recorded
    old = _record(run_dir)
    acc = old.metrics["test"]["accuracy"]
    nudged = _record(run_dir, **{"metrics/test/accuracy": acc + 1e-9})
    other = [{"what": "epochs_run", "recorded": 2, "now": 2}]
    metrics = compare_metrics(old, nudged)
    assert [m["diff"] for m in metrics if m["diff"]] == pytest.approx([1e-9])
    assert verdict(metrics, other, [], 1e-6) == "differs"  # same environment: bit for bit or nothing
    newer = _record(run_dir, **{"versions/torch": "9.9.9", "git_commit": "abc"})
    env = environment_differences(old, newer)
    assert {d["what"] for d in env} == {"torch"} | ({"git commit"} if old.git_commit else set())
    assert verdict(metrics, other, env, 1e-6) == "within tolerance"
    assert verdict(metrics, other, env, 1e-12) == "differs"
    assert verdict(compare_metrics(old, old), other, [], 0.0) == "identical"
    moved = [{"what": "best_epoch", "recorded": 1, "now": 2}]
    assert verdict(compare_metrics(old, old), moved, [], 1.0) == "differs"


def test_bad_sources(recorded, tmp_path, capsys):
    run_dir, _ = recorded
    code, _, err = cli_inproc(capsys, "reproduce", "no-such-dir")
    assert code == 2 and "error: no-such-dir: not a run dir (no such folder) and not an MLflow run ID" in err
    code, _, err = cli_inproc(capsys, "reproduce", "0" * 32)
    assert code == 2 and "error: 00000000000000000000000000000000: no such MLflow run" in err
    code, _, err = cli_inproc(capsys, "reproduce", str(run_dir), "--tolerance", "-1")
    assert code == 2 and "--tolerance -1.0: must be a number ≥ 0" in err
    failed = tmp_path / "failed"
    shutil.copytree(run_dir, failed)
    s = json.loads((failed / "summary.json").read_text())
    s["status"] = "failed"
    (failed / "summary.json").write_text(json.dumps(s))
    code, _, err = cli_inproc(capsys, "reproduce", str(failed))
    assert code == 2 and "the run did not finish (status 'failed')" in err
    (failed / "config.yaml").unlink()
    code, _, err = cli_inproc(capsys, "reproduce", str(failed))
    assert code == 2 and "not a run dir (no config.yaml)" in err
    assert not any(p.name.startswith("iris") for p in (tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else True
