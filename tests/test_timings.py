"""summary.json → timings: each stage's wall time, in the report too; a line per stage on stderr when
stderr is a log file (stdout unchanged), nothing with ``train.progress=false``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time

import pytest

import methodo
from methodo.errors import RunFailed
from methodo.pipeline import RunResult
from methodo.record import RunRecord

from conftest import EXAMPLES, FAST, cli, cli_inproc

DIGITS = str(EXAMPLES / "digits.yaml")
STAGES = ["config", "load", "prepare", "audit", "setup", "train", "predict", "evaluate", "diagnose", "figures",
          "explain", "report", "tracking"]
ROUNDING = 0.0005  # each value is rounded to the millisecond


def _run(overrides, out):
    """``methodo.run`` with stderr captured; returns (result or the exception, wall seconds, stderr)."""
    err = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(err):
        try:
            res = methodo.run(DIGITS, overrides, out=out)
        except RunFailed as exc:
            res = exc
    return res, time.perf_counter() - t0, err.getvalue()


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    return _run(FAST, tmp_path_factory.mktemp("timings") / "r")


def test_a_run_times_each_stage_in_order(quiet_run):
    res, wall, _ = quiet_run
    t = res.summary["timings"]
    assert list(t) == [*STAGES, "total"]
    assert all(isinstance(v, float) and v >= 0 for v in t.values()), t
    assert sum(v for k, v in t.items() if k != "total") <= t["total"] + ROUNDING * len(t), t
    assert t["total"] <= wall + ROUNDING, (t["total"], wall)
    assert t["train"] > 0 and t["evaluate"] > 0
    assert res.record.duration_s <= t["total"]  # duration_s stops before the report
    on_disk = json.loads((res.run_dir / "summary.json").read_text())
    assert on_disk["timings"] == t
    assert RunRecord.parse(on_disk).timings == t


def test_quiet_run_prints_no_stage_or_epoch_line(quiet_run):
    _, _, err = quiet_run
    assert not [line for line in err.splitlines() if line.startswith(("stage ", "epoch "))], err


def test_report_shows_where_the_time_went(quiet_run):
    from methodo.report.html import render_report

    res, _, _ = quiet_run
    table = re.search(r'<table id="timings">(.*?)</table>', (res.run_dir / "report.html").read_text(), re.S)
    assert table, "no timings table"
    rows = re.findall(r"<tr><td>(\w+)</td><td>([\d.]+)</td><td>([\d.]+)%</td></tr>", table.group(1))
    # written during the report stage: the stages before it, each with its share of the total so far
    assert [r[0] for r in rows] == STAGES[:STAGES.index("report")]
    assert 0 < sum(float(r[2]) for r in rows) <= 100.5
    again = render_report(res.run_dir).read_text()  # `methodo report DIR`: every stage
    assert all(f"<tr><td>{s}</td>" in again for s in STAGES) and "come after it" not in again


def test_a_failed_run_keeps_the_timings_of_the_stages_that_ran(tmp_path):
    exc, wall, err = _run(["track.mlflow=false", "train.optimizer.lr=1e6"], tmp_path / "d")  # diverges at step 2
    assert isinstance(exc, RunFailed)
    summary = RunRecord.parse(json.loads((tmp_path / "d" / "summary.json").read_text()))
    assert summary.status == "failed"
    t = summary.timings
    assert list(t) == ["config", "load", "prepare", "audit", "setup", "train", "report", "tracking", "total"]
    assert all(v >= 0 for v in t.values()) and t["total"] <= wall + ROUNDING
    # progress on, stderr a file: the stage that raised says so
    assert re.search(r"^stage train: \d+\.\d\d s \(failed\)$", err, re.M), err
    assert '<table id="timings">' in (tmp_path / "d" / "report.html").read_text()


def test_stage_lines_go_to_stderr_when_it_is_a_log_file_and_stdout_is_unchanged(tmp_path, capsys):
    from methodo.cli import _print_result

    out = tmp_path / "c"
    res = cli("run", DIGITS, "train.epochs=1", "track.mlflow=false", "--out", str(out))  # progress on by default
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("stage ")]
    assert [line.split()[1].rstrip(":") for line in lines] == STAGES, res.stderr
    assert all(re.fullmatch(r"stage \w+: \d+\.\d\d s", line) for line in lines), lines
    assert re.search(r"^epoch 1/1 .* s\)$", res.stderr, re.M)  # the epoch lines as before
    # stdout is exactly the run's headline, as without the stage lines
    record = RunRecord.parse(json.loads((out / "summary.json").read_text()))
    capsys.readouterr()
    _print_result(RunResult(out, record))
    assert res.stdout == capsys.readouterr().out
    assert "stage " not in res.stdout


def test_bad_input_found_after_some_stages_is_still_one_line(tmp_path, capsys):
    """Stage lines start once the run dir exists: the batch size is refused after load (progress on)."""
    code, out, err = cli_inproc(capsys, "run", DIGITS, "train.batch_size=5000", "track.mlflow=false",
                                "--out", str(tmp_path / "x"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()
