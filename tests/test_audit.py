"""`methodo data inspect`: every data problem found at once, with its evidence; corrupt files stop a run
with their path, also when decoded in DataLoader workers."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from methodo.config import validate
from methodo.data.audit import inspect_data

from conftest import cli_inproc, write_yaml


def _messy_csv(path: Path) -> dict:
    """200 clean rows, 20 exact copies, and every kind of problem at a known line."""
    rng = np.random.default_rng(0)
    n = 200
    y = np.array([0] * 155 + [1] * 45)
    rng.shuffle(y)
    rows = []
    for i in range(n):
        rows.append([f"{rng.normal():.4f}", f"{rng.normal():.4f}", "7", f"{10 * y[i] + rng.normal(0, 0.1):.4f}",
                     rng.choice(["red", "green", "blue"]), str(y[i])])
    rows += [list(r) for r in rows[:20]]  # exact duplicates
    missing_lines = [5, 9, 40, 41, 150]  # file lines (line 1 is the header)
    for line in missing_lines:
        rows[line - 2][1] = ""
    rows[60 - 2][0] = "abc"  # a string in a numeric feature column
    rows[70 - 2][5] = ""  # a missing label
    rows[80 - 2][5] = "oops"  # a string in the numeric label column
    path.write_text("f1,f2,const,leak,color,label\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return {"missing_lines": missing_lines}


def _inspect_json(capsys, tmp_path, config_text: str, *overrides):
    cfg = write_yaml(tmp_path / "c.yaml", config_text)
    code, out, err = cli_inproc(capsys, "data", "inspect", str(cfg), *overrides, "--json")
    assert code == 0, err
    return json.loads(out)


def test_inspect_finds_every_tabular_problem_at_once(tmp_path, capsys):
    _messy_csv(tmp_path / "messy.csv")
    out = _inspect_json(capsys, tmp_path, f"""\
data: {{source: csv, path: {tmp_path / 'messy.csv'}, target: label}}
model: {{name: mlp}}
""")
    assert set(out["splits"]) == {"train", "val", "test"}
    assert sum(v["n"] for v in out["splits"].values()) == 218  # 220 rows less the 2 bad labels
    for v in out["splits"].values():
        assert sum(v["class_counts"].values()) == v["n"]
    by_id = {f["id"]: f for f in out["findings"]}
    for f in out["findings"]:
        assert set(f) == {"id", "severity", "title", "evidence", "action"}
    assert {"class_imbalance", "duplicates_across_splits", "duplicates_within_split", "missing_values",
            "constant_feature", "target_leakage", "bad_label", "bad_value"} <= set(by_id)

    assert by_id["class_imbalance"]["evidence"]["minority_class"] == "1"
    assert by_id["class_imbalance"]["evidence"]["ratio"] >= 3
    across = by_id["duplicates_across_splits"]
    assert across["severity"] == "critical" and across["evidence"]["train_test"] > 0
    assert by_id["missing_values"]["evidence"]["per_column"] == {"f1": 1, "f2": 5}  # 'abc' reads as missing
    assert by_id["missing_values"]["evidence"]["first_rows"][0] == "row 5"
    assert by_id["constant_feature"]["evidence"]["features"] == ["const"]
    assert list(by_id["target_leakage"]["evidence"]["features"]) == ["leak"]
    assert by_id["target_leakage"]["severity"] == "critical"
    bad = {r["row"]: r for r in by_id["bad_label"]["evidence"]["rows"]}
    assert set(bad) == {70, 80} and bad[80]["value"] == "oops" and bad[70]["value"] is None
    assert by_id["bad_value"]["evidence"]["cells"] == [{"row": 60, "column": "f1", "value": "abc"}]
    # findings are ordered by severity: the critical ones first
    order = ["critical", "high", "medium", "low", "info"]
    assert [order.index(f["severity"]) for f in out["findings"]] == sorted(order.index(f["severity"])
                                                                         for f in out["findings"])


def test_inspect_human_output_and_a_run_that_stops_on_the_bad_label(tmp_path, capsys):
    _messy_csv(tmp_path / "messy.csv")
    cfg = write_yaml(tmp_path / "c.yaml", f"""\
data: {{source: csv, path: {tmp_path / 'messy.csv'}, target: label}}
model: {{name: mlp}}
track: {{mlflow: false}}
""")
    code, out, _ = cli_inproc(capsys, "data", "inspect", str(cfg))
    assert code == 0
    assert "split: stratified" in out and "[critical] duplicates_across_splits" in out
    assert "[critical] target_leakage: Feature 'leak' alone predicts the target" in out
    code, _, err = cli_inproc(capsys, "run", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2 and not (tmp_path / "r").exists()
    assert err.strip() == f"error: {tmp_path / 'messy.csv'} row 70: missing value in target column 'label'"


def test_clean_bundled_data_has_no_findings():
    for source in ("wine", "breast_cancer", "digits"):
        out = inspect_data(validate({"data": {"source": source}, "model": {"name": "mlp"}}))
        assert out["findings"] == [], (source, out["findings"])


def _smooth(rng, size=16) -> np.ndarray:
    """A smooth RGB image (low-frequency noise upsampled): survives JPEG re-encoding."""
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small, "RGB").resize((size, size), Image.BILINEAR))


def _png_bytes(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _image_folder(root: Path, *, corrupt: bool) -> None:
    rng = np.random.default_rng(3)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(14):
            img = _smooth(rng)
            (root / c / f"{c}{i:02d}.png").write_bytes(_png_bytes(img))
            if i < 5:  # a near copy: brighter, slightly more contrast, saved as JPEG
                near = np.clip(img.astype(float) * 1.1 + 12, 0, 255).astype(np.uint8)
                Image.fromarray(near, "RGB").save(root / c / f"{c}{i:02d}_copy.jpg", quality=92)
        for i in range(3):  # exact copies under another name
            shutil.copy(root / c / f"{c}{i + 6:02d}.png", root / c / f"{c}{i + 6:02d}_dup.png")
    if corrupt:
        good = (root / "a" / "a13.png").read_bytes()
        (root / "a" / "truncated.png").write_bytes(good[: len(good) // 2])
        (root / "b" / "empty.png").write_bytes(b"")
        (root / "b" / "readme.png").write_text("this is text, not a PNG")


def test_inspect_image_folder_unreadable_files_and_copies_across_splits(tmp_path, capsys):
    _image_folder(tmp_path / "imgs", corrupt=True)
    out = _inspect_json(capsys, tmp_path, f"""\
data: {{source: imagefolder, path: {tmp_path / 'imgs'}, workers: 2}}
model: {{name: cnn}}
""")
    by_id = {f["id"]: f for f in out["findings"]}
    files = {Path(f["path"]).name: f["reason"] for f in by_id["unreadable_file"]["evidence"]["files"]}
    assert set(files) == {"truncated.png", "empty.png", "readme.png"}
    assert "0-byte" in files["empty.png"] and "truncated" in files["truncated.png"]
    assert "not an image" in files["readme.png"]
    assert sum(v["n"] for v in out["splits"].values()) == 2 * (14 + 5 + 3)  # the readable images
    near = by_id["near_duplicates_across_splits"]["evidence"]
    assert near["test"] + near["val"] > 0
    for ex in near["examples"]:
        names = [Path(v).stem for k, v in ex.items() if k != "distance"]
        assert names[0].split("_")[0] == names[1].split("_")[0]  # each pair is an image and its own copy
        assert ex["distance"] < 0.05
    assert "duplicates_across_splits" in by_id or "duplicates_within_split" in by_id


@pytest.mark.parametrize("workers", [0, 2])
def test_training_on_a_truncated_image_names_the_file(tmp_path, capsys, workers):
    root = tmp_path / "imgs"
    _image_folder(root, corrupt=False)
    good = (root / "b" / "b03.png").read_bytes()
    (root / "b" / "cut.png").write_bytes(good[: len(good) // 2])
    cfg = write_yaml(tmp_path / "c.yaml", f"""\
data: {{source: imagefolder, path: {root}, workers: {workers}}}
model: {{name: cnn}}
train: {{epochs: 1, progress: false}}
track: {{mlflow: false}}
""")
    code, _, err = cli_inproc(capsys, "run", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {root / 'b' / 'cut.png'}: unreadable image: truncated")
    assert "Traceback" not in err and not (tmp_path / "r").exists()


def test_near_constant_feature_is_named_with_its_share():
    """One value in ≥ 99 % of a column's rows: named beside the constant ones; an ordinary column is not."""
    import numpy as np

    from methodo.data.audit import AuditFacts, constant_feature

    rng = np.random.default_rng(0)
    n = 2000
    near = np.zeros(n, np.float32)
    near[rng.choice(n, 10, replace=False)] = rng.normal(size=10)  # 0.0 in 99.5 % of rows
    rare_half = np.zeros(n, np.float32)
    rare_half[: n // 20] = 1.0  # a 5 % flag: informative, not near-constant
    X = np.c_[rng.normal(size=n), near, np.ones(n), rare_half].astype(np.float32)
    facts = AuditFacts(kind="tabular", task="classification", X=X, y=rng.integers(0, 2, n),
                       feature_names=["normal", "near", "const", "flag"], indices={"train": np.arange(n)})
    f = constant_feature(facts)
    assert f is not None and f.evidence["features"] == ["const", "near"]
    assert f.evidence["constant"] == ["const"]
    assert f.evidence["near_constant"] == {"near": {"value": 0.0, "share": 0.995}}
    assert f.title.startswith("1 constant and 1 near-constant feature(s)")
