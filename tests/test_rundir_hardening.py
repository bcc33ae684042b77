"""Issue 10, the run-dir families: a failed command never damages a run, the report trusts nothing it
reads, two runs never share a dir, an unreachable tracking store is found before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import time

import pytest

import methodo

from conftest import EXAMPLES, FAST, cli_inproc

IRIS = [*FAST, "evaluate.bootstrap=0", "explain.enabled=false", "train.monitor.enabled=false"]


def _snapshot(root) -> dict[str, str]:
    """Every file under ``root`` (links too) → its content hash: 'byte for byte as it was'."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif os.path.isfile(p):
                out[rel] = hashlib.sha256(open(p, "rb").read()).hexdigest()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fin") / "run"
    methodo.run(str(EXAMPLES / "iris.yaml"), IRIS, out=out)
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def _pickle_file(path):
    import pickle

    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))


def _no_state(path):
    from safetensors.torch import save_file
    import torch

    save_file({"w": torch.zeros(2)}, str(path))


def _huge_header(path):
    path.write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")


DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "pickle": _pickle_file,
    "weights_without_state": _no_state,
    "header_claims_2^62_bytes": _huge_header,
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_failed_resume_leaves_the_run_dir_byte_for_byte(finished_run, tmp_path, capsys, damage):
    d = _copy(finished_run, tmp_path / "r")
    DAMAGES[damage](d / "checkpoints" / "last.safetensors")
    before = _snapshot(d)
    code, out, err = cli_inproc(capsys, "run", "--resume", str(d))
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "last.safetensors" in err
    assert _snapshot(d) == before


@pytest.mark.parametrize("override, needle", [("model.hidden=[7]", "does not fit the model"),
                                               ("train.optimizer={name: sgd, lr: 0.1, momentum: 0.9}", "optimizer state does not fit")])
def test_a_resume_with_an_incompatible_change_is_refused_untouched(finished_run, tmp_path, capsys, override, needle):
    d = _copy(finished_run, tmp_path / "r")
    before = _snapshot(d)
    code, out, err = cli_inproc(capsys, "run", "--resume", str(d), override)
    assert code == 2 and needle in err and "Traceback" not in err, err
    assert _snapshot(d) == before


def test_out_refuses_non_run_folders_and_the_current_folder(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), *IRIS, "--out", str(mine))
    assert code == 2 and "not empty and is not a methodo run dir" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), *IRIS, "--out", "")
    assert code == 2 and "give a folder name" in err


def test_two_runs_racing_for_one_out_have_exactly_one_winner(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "methodo", "run", str(EXAMPLES / "iris.yaml"), *IRIS, "--out", str(tmp_path / "x")]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(e for c, e in results if c == 2)
    assert "already holds a run" in loser and len(loser.strip().splitlines()) == 1
    assert json.loads((tmp_path / "x" / "summary.json").read_text())["status"] == "finished"


def test_report_refuses_a_figure_linking_outside(finished_run, tmp_path, capsys):
    d = _copy(finished_run, tmp_path / "r")
    secret = tmp_path / "secret"
    secret.write_text("root:x:0:0")
    (d / "figures" / "roc.png").unlink(missing_ok=True)
    os.symlink(secret, d / "figures" / "roc.png")
    before = (d / "report.html").read_bytes()
    code, _, err = cli_inproc(capsys, "report", str(d))
    assert code == 2 and "roc.png" in err and "escape" in err
    assert (d / "report.html").read_bytes() == before  # nothing rendered from it
    os.unlink(d / "figures" / "roc.png")
    os.symlink(d / "figures" / "learning_curves.png", d / "figures" / "roc.png")  # a link inside: refused too
    code, _, err = cli_inproc(capsys, "report", str(d))
    assert code == 2 and "symbolic link" in err


@pytest.mark.parametrize("key, value", [("seed", "<script>alert(1)</script>"), ("epochs_run", "<b>"),
                                        ("best_epoch", {"x": 1}), ("metrics", "nope"), ("findings", [{"id": 1}]),
                                        ("data", {"splits": "<img src=x onerror=alert(1)>"}),
                                        ("kfold", {"folds": "<script>", "runs": []})])
def test_report_refuses_a_tampered_summary_naming_the_key(finished_run, tmp_path, capsys, key, value):
    d = _copy(finished_run, tmp_path / "r")
    s = json.loads((d / "summary.json").read_text())
    s[key] = value
    (d / "summary.json").write_text(json.dumps(s))
    code, _, err = cli_inproc(capsys, "report", str(d))
    assert code == 2 and f": {key}" in err and "Traceback" not in err, err


def test_report_escapes_every_text_it_renders(finished_run, tmp_path, capsys):
    d = _copy(finished_run, tmp_path / "r")
    s = json.loads((d / "summary.json").read_text())
    evil = "<script>alert(1)</script>"
    s["name"] = s["dataset"] = evil
    s["findings"] = [{"id": evil, "severity": "high", "title": evil, "evidence": {evil: evil}, "action": evil}]
    s["data"]["description"] = evil
    s["metrics"]["test"][evil] = 1.0
    (d / "summary.json").write_text(json.dumps(s))
    (d / "config.yaml").write_text(f"name: '{evil}'\n")
    code, _, err = cli_inproc(capsys, "report", str(d))
    assert code == 0, err
    html = (d / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize("summary", [b"[1, 2]", b"\xff\xfe\x00{", b"{not json", b'{"status": "finished"}'])
def test_report_on_a_damaged_summary_is_one_error_line(finished_run, tmp_path, capsys, summary):
    d = _copy(finished_run, tmp_path / "r")
    (d / "summary.json").write_bytes(summary)
    code, _, err = cli_inproc(capsys, "report", str(d))
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_report_with_config_yaml_a_folder(finished_run, tmp_path, capsys):
    d = _copy(finished_run, tmp_path / "r")
    (d / "config.yaml").unlink()
    (d / "config.yaml").mkdir()
    code, _, err = cli_inproc(capsys, "report", str(d))
    assert code == 0, err  # the report renders without the config text


def test_unreachable_tracking_server_is_refused_fast_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    args = ["run", str(EXAMPLES / "iris.yaml"), *[o for o in IRIS if not o.startswith("track.")]]
    out = ["--out", str(tmp_path / "r")]
    t0 = time.perf_counter()
    code, _, err = cli_inproc(capsys, *args, *out)
    assert code == 2 and "http://127.0.0.1:9" in err and "track.mlflow=false" in err, err
    assert time.perf_counter() - t0 < 60 and not (tmp_path / "r").exists()
    code, _, err = cli_inproc(capsys, *args, "track.required=false", *out)
    assert code == 0 and "warning: the MLflow store http://127.0.0.1:9" in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["mlflow_run_id"] is None


def test_sqlite_store_in_a_missing_folder_is_refused(tmp_path, capsys):
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), "train.epochs=1", "train.progress=false",
                              "evaluate.bootstrap=0", f"track.tracking_uri=sqlite:///{tmp_path}/nope/m.db",
                              "--out", str(tmp_path / "r"))
    assert code == 2 and "does not exist" in err and not (tmp_path / "r").exists(), err


def test_resume_cannot_stretch_a_planned_schedule(tmp_path, capsys):
    d = tmp_path / "r"
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), *IRIS, "train.scheduler=onecycle",
                              "--out", str(d))
    assert code == 0, err
    before = _snapshot(d)
    code, _, err = cli_inproc(capsys, "run", "--resume", str(d), "train.epochs=4")
    assert code == 2 and "train.epochs: the run started with 2 epochs and its 'onecycle' schedule" in err, err
    assert _snapshot(d) == before
