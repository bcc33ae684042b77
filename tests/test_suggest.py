"""`methodo suggest`: the printed config is valid, says why beside each choice, runs, and beats the dummy
baselines on every bundled dataset (the image, text and sequence ones under the slow mark)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from conftest import EXAMPLES, ROOT, cli

import methodo
from methodo.tasks import task_spec


def _suggest(*args: str, cwd) -> subprocess.CompletedProcess:
    return cli("suggest", *args, cwd=cwd)


def _beats_baselines(summary: dict) -> None:
    """The test metric of the task's headline beats every dummy strategy; for classes, balanced accuracy too."""
    metric, sign = task_spec(summary["task"]).headline
    checks = [(metric, sign)] + ([("balanced_accuracy", 1)] if summary["task"] == "classification" else [])
    for m, s in checks:
        ours = summary["metrics"]["test"][m]
        dummies = {k: v[m] for k, v in summary["baselines"].items() if v.get(m) is not None}
        assert dummies, summary["baselines"]
        best = max(dummies.values()) if s > 0 else min(dummies.values())
        assert s * ours > s * best, f"{summary['dataset']}: test {m} {ours:.4f} vs dummy {dummies}"


def _run_suggestion(tmp_path, what: str, *extra: str) -> dict:
    res = _suggest(what, *extra, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(res.stdout)
    # every set key says why, beside it
    for line in res.stdout.splitlines():
        if line.strip() and not line.startswith("#") and not line.rstrip().endswith(":"):
            assert "  # " in line, line
    out = methodo.run(str(cfg), ["train.progress=false", "track.mlflow=false"], out=tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert out.summary["status"] == "finished"
    _beats_baselines(summary)
    return summary


def test_suggest_then_run_from_the_shell(tmp_path):
    """The contract of the issue, as a user types it: suggest > exp.yaml && run exp.yaml."""
    res = subprocess.run(f"{sys.executable} -m methodo suggest iris > exp.yaml && "
                         f"{sys.executable} -m methodo run exp.yaml train.progress=false --out r",
                         shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["model"]["name"] == "mlp" and summary["dataset"] == "iris"
    _beats_baselines(summary)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wine", "breast_cancer", "diabetes", "circles"])
def test_the_suggestion_for_a_bundled_table_beats_its_dummy_baseline(tmp_path, name):
    s = _run_suggestion(tmp_path, name)
    assert s["model"]["name"] == "mlp"


def test_an_imbalanced_csv_gets_smote_and_imbalance_aware_metrics(tmp_path):
    subprocess.run([sys.executable, str(EXAMPLES / "imbalanced_breast_cancer.py"), "imb.csv"], cwd=tmp_path,
                   check=True, capture_output=True)
    text = _suggest("imb.csv", cwd=tmp_path).stdout
    cfg = yaml.safe_load(text)
    assert cfg["data"] == {"source": "csv", "path": "imb.csv", "target": "target", "balance": "smote",
                           "split": {"method": "stratified", "val": 0.15, "test": 0.15}}
    assert "balanced_accuracy" in cfg["evaluate"]["metrics"]
    assert "smallest class is 7% of the largest" in text
    _run_suggestion(tmp_path, "imb.csv")


def test_sensitive_columns_of_a_csv_become_data_sensitive(tmp_path):
    subprocess.run([sys.executable, str(EXAMPLES / "hiring.py"), "hiring.csv"], cwd=tmp_path, check=True,
                   capture_output=True)
    cfg = yaml.safe_load(_suggest("hiring.csv", cwd=tmp_path).stdout)
    assert cfg["data"]["target"] == "hired" and cfg["data"]["sensitive"] == ["gender", "age_band"]
    assert cfg["model"]["hidden"] == [32, 16]  # 5 features (gender and age_band are not): at least 32 units
    # a config's data section is kept as it is written
    again = yaml.safe_load(_suggest(str(EXAMPLES / "hiring.yaml"), cwd=tmp_path).stdout)
    assert again["data"]["sensitive"] == ["gender", "age_band"] and again["name"] == "hiring-mlp"


def test_folders_and_text_csvs_are_recognized(tmp_path):
    subprocess.run([sys.executable, str(EXAMPLES / "image_folder.py"), "imgs"], cwd=tmp_path, check=True,
                   capture_output=True)
    subprocess.run([sys.executable, str(EXAMPLES / "text_topics.py"), "--out", "topics.csv"], cwd=tmp_path,
                   check=True, capture_output=True)
    img = yaml.safe_load(_suggest("imgs", cwd=tmp_path).stdout)
    assert img["data"]["source"] == "imagefolder" and img["model"]["name"] == "cnn"
    assert "flip" not in json.dumps(img["data"].get("augment", []))  # 1 channel: not assumed mirror-invariant
    txt = yaml.safe_load(_suggest("topics.csv", cwd=tmp_path).stdout)
    assert txt["data"] == {"source": "text_csv", "path": "topics.csv", "target": "label", "options": {"text": "text"},
                           "split": {"method": "stratified", "val": 0.15, "test": 0.15}}
    assert txt["model"]["name"].startswith("hf:") and txt["transfer"]["strategy"] == "linear_probe"


@pytest.mark.parametrize("args, says", [
    (["nope"], "error: nope: not a file, a folder or a dataset name; give a CSV file"),
    (["csv"], "error: csv: this source reads your files; give the file or folder itself"),
    (["t.csv", "--target", "zzz"], "error: --target 'zzz': no such column in t.csv; columns: 'a', 'b'"),
    (["t.csv", "--text", "zzz"], "error: --text 'zzz': no such column in t.csv"),
    (["one.csv"], "error: one.csv: 1 column(s); a table needs feature columns and a target column"),
    (["empty"], "error: empty: no class subfolders"),
])
def test_bad_input_is_one_error_line(tmp_path, args, says):
    (tmp_path / "t.csv").write_text("a,b\n1,0\n2,1\n")
    (tmp_path / "one.csv").write_text("a\n1\n")
    (tmp_path / "empty").mkdir()
    res = _suggest(*args, cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith(says), res.stderr
    assert res.stderr.count("\n") == 1 and res.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("what", ["digits", "digits_attributes", "shapes", "python_docs", "co2", "graph_cycles", "imgs",
                                  "topics.csv"])
def test_the_suggestion_for_image_text_and_sequence_data_beats_its_dummy_baseline(tmp_path, what):
    if what == "imgs":
        subprocess.run([sys.executable, str(EXAMPLES / "image_folder.py"), "imgs"], cwd=tmp_path, check=True)
    if what == "topics.csv":
        subprocess.run([sys.executable, str(EXAMPLES / "text_topics.py"), "--out", "topics.csv"], cwd=tmp_path,
                       check=True)
    _run_suggestion(tmp_path, what)


def _co2_csv(tmp_path) -> None:
    import pandas as pd

    from methodo.data.series import co2_monthly

    values, months = co2_monthly()
    pd.DataFrame({"month": months, "co2": values}).to_csv(tmp_path / "co2.csv", index=False)


def test_a_csv_with_a_time_column_is_a_series_to_forecast(tmp_path):
    _co2_csv(tmp_path)
    cfg = yaml.safe_load(_suggest("co2.csv", cwd=tmp_path).stdout)
    assert cfg["task"] == "forecasting" and cfg["model"]["name"] == "recurrent"
    assert cfg["data"]["source"] == "series_csv" and cfg["data"]["target"] == "co2"
    assert cfg["data"]["options"] == {"time": "month", "window": 24, "horizon": 6, "period": 12}  # monthly: 12
    assert cfg["data"]["split"]["method"] == "time"
    # repeated times are records of many things, not one series: a table
    (tmp_path / "sales.csv").write_text("date,shop,amount\n" + "".join(
        f"2024-01-{1 + i % 5:02d},{i % 3},{i * 1.5}\n" for i in range(60)))
    assert yaml.safe_load(_suggest("sales.csv", cwd=tmp_path).stdout)["data"]["source"] == "csv"


@pytest.mark.slow
def test_the_suggestion_for_a_series_beats_its_baselines(tmp_path):
    _co2_csv(tmp_path)
    _run_suggestion(tmp_path, "co2.csv")
