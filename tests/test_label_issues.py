"""Label issues (issue 12): confident learning (cleanlab) over out-of-sample probabilities, in a run
(val + test, or every row by cross-fitting) and in `methodo data label-issues`; the run dir files that
let a run be re-checked (splits.csv, predictions_val.csv, label_issues.csv).

The data: scikit-learn's digits written as a CSV (64 pixel columns and a label) with 15% of the labels
flipped to another class, uniformly (symmetric noise), by a seeded generator (examples/noisy_labels.py,
which the docs run too): the flipped rows are known.
"""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

import methodo
from methodo.evaluate.label_issues import COLUMNS, find_label_issues

from conftest import EXAMPLES, FAST, cli_inproc

NOISE = 0.15
SPLITS = {"train", "val", "test"}
# A small MLP, one thread (two shared cores: more threads only fight), no tracking: a 3-fold cross-fit ~5 s.
CONFIG = """name: noisy-digits
seed: 0
data: {{source: csv, path: {path}, target: label}}
model: {{name: mlp, hidden: [64]}}
train:
  epochs: 20
  batch_size: 64
  optimizer: {{name: adam, lr: 0.003}}
  threads: 1
  progress: false
track: {{mlflow: false}}
explain: {{enabled: false}}
evaluate: {{bootstrap: 0}}
"""


def _read(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _example():
    """examples/noisy_labels.py, the script the docs run: the noisy digits and the rows it flipped."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("noisy_labels", EXAMPLES / "noisy_labels.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The noisy digits CSV, its config, the labels as written and the set of flipped rows."""
    root = tmp_path_factory.mktemp("noisy")
    ex = _example()
    path = root / "noisy.csv"
    ex.write(str(path))
    _, y, true, flipped = ex.noisy_digits()
    assert ex.NOISE == NOISE and len(flipped) == int(NOISE * len(y))
    assert (y[flipped] != true[flipped]).all() and (np.delete(y, flipped) == np.delete(true, flipped)).all()
    cfg = root / "noisy.yaml"
    cfg.write_text(CONFIG.format(path=path))
    return {"root": root, "csv": path, "config": cfg, "y": y, "true": true, "flipped": set(flipped.tolist())}


@pytest.fixture(scope="module")
def dropped(noisy):
    """`methodo data label-issues` over every row (3-fold cross-fitting), with a cleaned copy (drop)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from methodo.cli import main

    root = noisy["root"]
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["data", "label-issues", str(noisy["config"]), "--folds", "3", "--issues",
                     str(root / "issues.csv"), "--fix", "drop", "--out", str(root / "dropped.csv")])
    assert code == 0, err.getvalue()
    return {"stdout": out.getvalue(), "issues": _read(root / "issues.csv"), "clean": root / "dropped.csv"}


# --------------------------------------------------------------------------- the search itself


def test_cross_fitting_finds_the_flipped_rows(noisy, dropped):
    found = {int(r["row"]) for r in dropped["issues"]}
    hits = len(found & noisy["flipped"])
    precision, recall = hits / len(found), hits / len(noisy["flipped"])
    assert precision >= 0.8 and recall >= 0.8, (precision, recall, len(found), len(noisy["flipped"]))
    assert f"{len(found)} of {len(noisy['y'])} rows" in dropped["stdout"]


def test_label_issues_csv_has_its_columns_and_ranks(noisy, dropped):
    rows = dropped["issues"]
    with open(noisy["root"] / "issues.csv", newline="") as fh:
        assert next(csv.reader(fh)) == COLUMNS
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    quality = [float(r["label_quality"]) for r in rows]
    assert quality == sorted(quality)  # most suspect first
    assert len({r["row"] for r in rows}) == len(rows)
    for r in rows:
        i = int(r["row"])
        assert r["given"] == str(noisy["y"][i]) and r["suggested"] != r["given"]
        assert r["split"] in SPLITS
        assert 0 <= float(r["p_given"]) <= 1 and 0 <= float(r["p_suggested"]) <= 1
        assert float(r["p_given"]) < float(r["p_suggested"])  # the model prefers the suggestion
    # where the model was right, relabeling restores the original label
    right = [r for r in rows if int(r["row"]) in noisy["flipped"]]
    restored = np.mean([r["suggested"] == str(noisy["true"][int(r["row"])]) for r in right])
    assert restored >= 0.8, restored
    # the printed table: the most suspect first, with the CSV line of each row
    first = rows[0]
    assert f"line {int(first['row']) + 2}" in dropped["stdout"]
    assert f"issues: {noisy['root'] / 'issues.csv'}" in dropped["stdout"]


def test_fix_drop_writes_every_row_but_the_suspects(noisy, dropped):
    original = _read(noisy["csv"])
    clean = _read(dropped["clean"])
    suspects = {int(r["row"]) for r in dropped["issues"]}
    assert clean == [row for i, row in enumerate(original) if i not in suspects]
    assert f"cleaned copy: {dropped['clean']} ({len(suspects)} rows dropped)" in dropped["stdout"]


def test_fix_relabel_writes_the_suggested_labels(noisy, capsys, tmp_path):
    issues, out = tmp_path / "i.csv", tmp_path / "relabeled.csv"
    code, stdout, err = cli_inproc(capsys, "data", "label-issues", str(noisy["config"]), "--folds", "3",
                                   "--issues", str(issues), "--fix", "relabel", "--out", str(out))
    assert code == 0, err
    suggested = {int(r["row"]): r["suggested"] for r in _read(issues)}
    original, clean = _read(noisy["csv"]), _read(out)
    assert len(clean) == len(original)
    for i, (a, b) in enumerate(zip(original, clean)):
        assert b == ({**a, "label": suggested[i]} if i in suggested else a), i
    assert f"({len(suggested)} rows relabeled)" in stdout
    # the relabeled copy is cleaner than the noisy file
    true = noisy["true"]
    assert np.mean([int(r["label"]) != t for r, t in zip(clean, true)]) < 0.5 * NOISE


# --------------------------------------------------------------------------- refusals (before any training)


def _one_line_error(code, out, err, *words):
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_refuses_to_overwrite_a_file(noisy, capsys, tmp_path):
    existing = tmp_path / "mine.csv"
    existing.write_text("precious\n")
    for flags, words in ((["--fix", "drop", "--out", str(existing)], ["--out", "exists"]),
                         (["--issues", str(existing)], ["--issues", "exists"])):
        issues = [] if "--issues" in flags else ["--issues", str(tmp_path / "new.csv")]
        res = cli_inproc(capsys, "data", "label-issues", str(noisy["config"]), *issues, *flags)
        _one_line_error(*res, *words)
        assert existing.read_text() == "precious\n"
        assert not (tmp_path / "new.csv").exists()  # refused before anything was written


@pytest.mark.parametrize("flags,words", [
    (["--fix", "drop"], ["--fix drop", "--out"]),
    (["--out", "clean.csv"], ["--out clean.csv", "--fix"]),
    (["--fix", "shuffle", "--out", "c.csv"], ["--fix", "drop", "relabel"]),
    (["--folds", "0"], ["--folds 0", "at least 2"]),
    (["--folds", "1"], ["--folds 1", "at least 2"]),
    (["--folds", "5000"], ["--folds 5000", "1797 rows"]),
    (["--folds", "400"], ["--folds 400", "smallest class"]),
])
def test_bad_arguments_are_one_line_errors(noisy, capsys, tmp_path, flags, words):
    res = cli_inproc(capsys, "data", "label-issues", str(noisy["config"]), *flags)
    _one_line_error(*res, *words)
    assert not (tmp_path / "label_issues.csv").exists() and not (tmp_path / "clean.csv").exists()


def test_fix_needs_a_csv_dataset_and_labels(capsys, tmp_path):
    res = cli_inproc(capsys, "data", "label-issues", str(EXAMPLES / "digits.yaml"), "--fix", "drop", "--out", "c.csv")
    _one_line_error(*res, "--fix drop", "'digits'", "csv")
    res = cli_inproc(capsys, "data", "label-issues", str(EXAMPLES / "diabetes.yaml"), "--folds", "2")
    _one_line_error(*res, "regression", "no labels")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- inside a run


def test_a_run_writes_splits_validation_predictions_and_its_label_issues(noisy, tmp_path):
    res = methodo.run(str(noisy["config"]), out=tmp_path / "r")
    rd = res.run_dir
    # splits.csv: every row of the dataset once, in a valid split, agreeing with the summary's counts
    splits = _read(rd / "splits.csv")
    assert sorted(int(r["row"]) for r in splits) == list(range(len(noisy["y"])))
    assert {r["split"] for r in splits} == SPLITS
    for s in SPLITS:
        assert sum(r["split"] == s for r in splits) == res.summary["data"]["splits"][s]["n"]
    # predictions_val.csv: the columns of predictions_test.csv, one line per validation row
    val, test = _read(rd / "predictions_val.csv"), _read(rd / "predictions_test.csv")
    with open(rd / "predictions_val.csv") as a, open(rd / "predictions_test.csv") as b:
        assert a.readline() == b.readline()
    assert sorted(int(r["row"]) for r in val) == sorted(int(r["row"]) for r in splits if r["split"] == "val")
    assert len(test) == res.summary["data"]["splits"]["test"]["n"]
    # label issues over val + test: every suspect in the file, the finding names it and counts them
    issues = _read(rd / "label_issues.csv")
    held_out = {int(r["row"]) for r in splits if r["split"] != "train"}
    assert issues and {int(r["row"]) for r in issues} <= held_out
    (f,) = [f for f in res.findings if f["id"] == "label_errors"]
    ev = f["evidence"]
    assert ev["file"] == "label_issues.csv" and ev["suspects"] == len(issues) and ev["method"] == "val_test"
    assert ev["searched"] == len(held_out) and 1 <= len(ev["top"]) <= 5
    assert [r["row"] for r in ev["top"]] == [int(r["row"]) for r in issues[:len(ev["top"])]]
    assert (rd / "figures" / "label_errors.png").is_file()
    hits = len({int(r["row"]) for r in issues} & noisy["flipped"])
    assert hits / len(issues) >= 0.8  # precise on the rows it could see
    # how sure: the Wilson interval of the suspects' share, above 1%
    from methodo.findings import wilson

    sure = ev["certainty"]
    assert sure["method"] == "wilson interval" and sure["interval"] == wilson(len(issues), len(held_out))
    assert sure["interval"][0] > 0.01
    # the report shows the suspects with their rows: the CSV's feature values beside given and suggested label
    X = _example().noisy_digits()[0]
    html = (rd / "report.html").read_text()
    table = html.split('<table id="label-issues">')[1].split("</table>")[0]
    assert table.count("<tr>") == len(ev["top"]) + 1 and "<th>px0</th>" in table and "<th>px11</th>" in table
    for r in ev["top"]:
        assert r["inputs"] == {f"px{j}": float(X[r["row"], j]) for j in range(12)}
        cells = f"<td>{r['rank']}</td><td>{r['row']}</td><td>{r['split']}</td><td>{r['given']}</td><td>{r['suggested']}</td>"
        assert cells in table
    assert "Wilson 95% interval" in html and 'class="certainty"' in html
    # the run dir still re-renders (the layout accepts the new files)
    from methodo.report.html import render_report

    again = render_report(rd).read_text()
    assert again.split('<table id="label-issues">')[1].split("</table>")[0] == table


def test_the_report_shows_image_suspects_as_thumbnails(tmp_path):
    """Digits as an image folder with the example's 15% flipped labels: the report's label-issue table shows
    each suspect's picture (inlined PNG) with its given and suggested label."""
    import base64
    import io

    from PIL import Image

    X, y, _, flipped = _example().noisy_digits()
    root = tmp_path / "noisy_images"
    for i, (x, label) in enumerate(zip(X, y)):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.reshape(8, 8) * 255 // 16).astype(np.uint8), mode="L").save(root / f"c{label}" / f"{i:04d}.png")
    cfg = tmp_path / "images.yaml"
    cfg.write_text(f"name: noisy-images\nseed: 0\ndata: {{source: imagefolder, path: {root}}}\n"
                   "model: {name: cnn, width: 16}\ntrain: {epochs: 12, batch_size: 64, optimizer: {name: adam, lr: 0.003},"
                   " threads: 1, progress: false}\ntrack: {mlflow: false}\nexplain: {enabled: false}\n"
                   "evaluate: {bootstrap: 0}\n")
    res = methodo.run(str(cfg), out=tmp_path / "r")
    (f,) = [f for f in res.findings if f["id"] == "label_errors"]
    top = f["evidence"]["top"]
    html = (res.run_dir / "report.html").read_text()
    table = html.split('<table id="label-issues">')[1].split("</table>")[0]
    imgs = re.findall(r'<img class="suspect" alt="([^"]*)" src="data:image/png;base64,([^"]+)">', table)
    assert len(imgs) == len(top) >= 1
    for s, (alt, b64) in zip(top, imgs):
        assert alt == f"row {s['row']}: given {s['given']}, suggested {s['suggested']}"
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert img.size[0] >= 64 and img.size == img.size[::-1]  # an enlarged 8×8 picture
        assert (res.run_dir / "figures" / f"suspect_{s['rank']}.png").read_bytes() == base64.b64decode(b64)
        assert "inputs" not in s  # images are shown, not listed
    from pathlib import Path

    from methodo.config import load_config
    from methodo.data.sources import load_dataset

    ds = load_dataset(load_config(cfg).data)  # dataset row → its file, named by the example's row
    assert sum(int(Path(ds.where(s["row"])).stem) in set(flipped.tolist()) for s in top) >= len(top) - 1


def test_cross_val_in_a_run_checks_every_row(noisy, tmp_path):
    res = methodo.run(str(noisy["config"]), ["evaluate.label_issues=cross_val", "evaluate.label_folds=3"],
                      out=tmp_path / "r")
    issues = _read(res.run_dir / "label_issues.csv")
    (f,) = [f for f in res.findings if f["id"] == "label_errors"]
    assert f["evidence"]["method"] == "cross_val" and f["evidence"]["searched"] == len(noisy["y"])
    assert f["evidence"]["suspects"] == len(issues) and "3-fold" in f["title"]
    found = {int(r["row"]) for r in issues}
    hits = len(found & noisy["flipped"])
    assert hits / len(found) >= 0.8 and hits / len(noisy["flipped"]) >= 0.8
    assert {r["split"] for r in issues} == SPLITS  # training rows are checked too
    assert "cross_fit" in res.summary["timings"]
    # the cross-fitting leaves the run's own numbers alone: same metrics as without it
    plain = json.loads((tmp_path / "r" / "summary.json").read_text())["metrics"]
    again = methodo.run(str(noisy["config"]), out=tmp_path / "plain")
    assert again.summary["metrics"] == plain


@pytest.mark.parametrize("overrides,words", [
    (["evaluate.label_issues=cross_val", "evaluate.label_folds=400"], ["evaluate.label_folds=400", "smallest class"]),
    (["evaluate.label_folds=1"], ["evaluate.label_folds"]),
    (["evaluate.label_issues=everything"], ["evaluate.label_issues", "val_test", "cross_val"]),
])
def test_bad_label_issue_options_fail_before_the_run_dir(noisy, capsys, tmp_path, overrides, words):
    res = cli_inproc(capsys, "run", str(noisy["config"]), *overrides, "--out", str(tmp_path / "r"))
    _one_line_error(*res, *words)
    assert not (tmp_path / "r").exists()


def test_cross_val_on_a_task_without_labels_is_refused(capsys, tmp_path):
    res = cli_inproc(capsys, "run", str(EXAMPLES / "diabetes.yaml"), *FAST, "evaluate.label_issues=cross_val",
                     "--out", str(tmp_path / "r"))
    _one_line_error(*res, "evaluate.label_issues", "regression")
    assert not (tmp_path / "r").exists()


def test_regression_writes_validation_predictions_and_no_label_issues(tmp_path):
    res = methodo.run(str(EXAMPLES / "diabetes.yaml"), [*FAST, "evaluate.bootstrap=0", "explain.enabled=false"],
                      out=tmp_path / "r")
    rd = res.run_dir
    assert not (rd / "label_issues.csv").exists()
    with open(rd / "predictions_val.csv") as a, open(rd / "predictions_test.csv") as b:
        assert a.readline() == b.readline() == "row,true,predicted\n"
    assert len(_read(rd / "splits.csv")) == 442


# --------------------------------------------------------------------------- multi-label


def test_multilabel_issues_through_cleanlab():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 4)) < 0.4).astype(np.float32)
    p = np.clip(np.where(y > 0, 0.93, 0.05) + rng.normal(0, 0.02, y.shape), 0.01, 0.99)
    wrong = rng.choice(300, 15, replace=False)
    given = y.copy()
    cols = rng.integers(0, 4, 15)
    given[wrong, cols] = 1 - given[wrong, cols]  # one label of each flipped
    found = find_label_issues(p, given, class_names=list("abcd"), multilabel=True)
    rows = {r["row"] for r in found.rows}
    assert len(rows & set(wrong.tolist())) >= 13 and len(rows) <= 18
    r = found.rows[0]
    i = r["row"]
    assert r["given"] == "|".join(n for n, v in zip("abcd", given[i]) if v)
    assert r["suggested"] == "|".join(n for n, v in zip("abcd", y[i]) if v)
    assert r["p_given"] < r["p_suggested"]


def test_multilabel_run_writes_its_label_issues(tmp_path):
    res = methodo.run(str(EXAMPLES / "digits_multilabel.yaml"),
                      [*FAST, "evaluate.bootstrap=0", "explain.enabled=false", "model.width=8"], out=tmp_path / "r")
    rd = res.run_dir
    with open(rd / "label_issues.csv") as fh:
        assert next(csv.reader(fh)) == COLUMNS
    with open(rd / "predictions_val.csv") as a, open(rd / "predictions_test.csv") as b:
        assert a.readline() == b.readline()


def test_nothing_to_confuse_means_no_issue():
    """One class among the rows searched, labels that never vary, too few rows: no search, no error."""
    assert find_label_issues(np.full((20, 3), 1 / 3), np.zeros(20, int)).count == 0
    assert find_label_issues(np.full((20, 3), 0.5), np.ones((20, 3)), multilabel=True).count == 0
    p = np.full((9, 2), 0.01)
    p[:, 0] = 0.99
    assert find_label_issues(p, np.ones(9, int)).count == 0  # under MIN_ROWS
