"""The intervals' coverage (evaluate.confidence) is what the terminal, summary.json and the report say."""

from __future__ import annotations

import json

from conftest import EXAMPLES, cli_inproc


def test_the_stated_level_is_the_configured_one(capsys, tmp_path):
    code, out, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), "train.epochs=2", "track.mlflow=false",
                                "train.progress=false", "explain.enabled=false", "evaluate.reference=false",
                                "evaluate.bootstrap=40", "evaluate.confidence=0.9", "--out", "r")
    assert code == 0, err
    assert "test metrics (model [90% bootstrap interval] | best dummy baseline):" in out
    summary = json.loads((tmp_path / "r/summary.json").read_text())
    assert summary["bootstrap"]["test"]["level"] == 0.9
    html = (tmp_path / "r/report.html").read_text()
    assert "<th>test 90% interval</th>" in html and "95% interval" not in html
