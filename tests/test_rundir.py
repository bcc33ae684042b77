"""The run dir type: exclusive creation, layout, guarded reads, atomic writes; the run record's schema."""

from __future__ import annotations

import json
import multiprocessing as mp
import os

import pytest

from methodo.errors import BadInput
from methodo.record import RunRecord
from methodo.rundir import LAYOUT, MARKER, RunDir


def _claim(args):
    path, q = args
    try:
        RunDir.create(path, name="x")
        q.put("won")
    except BadInput as exc:
        q.put(f"lost: {exc}")


def test_create_claims_the_dir_exclusively_among_racing_processes(tmp_path):
    target = tmp_path / "same"
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=((target, q),)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = [q.get(timeout=5) for _ in procs]
    assert results.count("won") == 1, results
    assert all("already holds a run" in r for r in results if r != "won")
    assert (target / MARKER).is_file() and (target / "figures").is_dir() and (target / "checkpoints").is_dir()


def test_create_refuses_what_is_not_an_empty_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(BadInput, match="not empty and is not a methodo run dir"):
        RunDir.create(tmp_path / "mine", name="x")
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]
    (tmp_path / "file").write_text("")
    with pytest.raises(BadInput, match="exists and is not a folder"):
        RunDir.create(tmp_path / "file", name="x")
    with pytest.raises(BadInput, match="give a folder name"):
        RunDir.create("", name="x")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text("{}")  # a run from before the marker existed
    with pytest.raises(BadInput, match="already holds a run"):
        RunDir.create(tmp_path / "old", name="x")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert RunDir.create(empty, name="x").path == empty  # an empty folder is fine


def test_default_name_goes_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rd = RunDir.create(None, name="exp", kind="lrfind")
    assert rd.path.parent.name == "runs" and rd.path.name.startswith("exp-lrfind-")


def test_reads_refuse_links_and_escapes(tmp_path):
    rd = RunDir.create(tmp_path / "r", name="x")
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    os.symlink(secret, rd.path / "figures" / "roc.png")
    os.symlink(rd.path / LAYOUT["config"], rd.path / "inner-link")
    rd.write_text(LAYOUT["config"], "name: x\n")
    assert not rd.has("figures/roc.png")  # leads outside
    for name in ("figures/roc.png", "inner-link", "../secret.txt", "%2e%2e/secret.txt", "/etc/passwd"):
        with pytest.raises(BadInput):
            rd.read_bytes(name)
    (rd.path / "big.json").write_bytes(b" " * 100)
    with pytest.raises(BadInput, match="more than the 10"):
        rd.read_bytes("big.json", limit=10)
    (rd.path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(BadInput, match="not UTF-8"):
        rd.read_json("bad.json")


def test_writes_are_atomic_and_leave_no_temporary_file(tmp_path):
    rd = RunDir.create(tmp_path / "r", name="x")
    rd.write_json("summary.json", {"a": 1})
    rd.write_csv("metrics.csv", ["epoch", "loss"], [[1, 0.5], [2, 0.25]])
    assert rd.read_json("summary.json") == {"a": 1}
    assert rd.read_text("metrics.csv").splitlines() == ["epoch,loss", "1,0.5", "2,0.25"]
    assert not [p for p in rd.path.iterdir() if p.name.endswith(".tmp")]


def test_open_names_what_is_missing(tmp_path):
    with pytest.raises(BadInput, match="no such folder"):
        RunDir.open(tmp_path / "nope", flag="--resume")
    (tmp_path / "r").mkdir()
    with pytest.raises(BadInput, match=r"not a run dir \(no config.yaml\)"):
        RunDir.open(tmp_path / "r", needs="config")


def test_record_rejects_a_tampered_summary_with_the_key():
    good = RunRecord(name="x", task="classification", dataset="digits", seed=0).to_dict()
    with pytest.raises(BadInput, match=r"summary.json: seed: "):
        RunRecord.parse({**good, "seed": "<script>alert(1)</script>"})
    with pytest.raises(BadInput, match=r"summary.json: epochs_run: "):
        RunRecord.parse({**good, "epochs_run": [1, 2]})
    with pytest.raises(BadInput, match=r"summary.json: surprise: unknown key"):
        RunRecord.parse({**good, "surprise": 1})
    with pytest.raises(BadInput, match="must be a JSON object"):
        RunRecord.parse([good])
    assert RunRecord.parse(json.loads(json.dumps(good))).to_dict() == good


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_splits_csv_is_what_the_csv_module_writes_sorted_by_row(tmp_path, n):
    """splits.csv is written by Arrow from arrays (10⁷ rows in seconds); its bytes are those of
    ``csv.writer`` over the sorted (row, split) pairs: header, ``\\r\\n`` line ends, nothing quoted."""
    import csv
    import io

    import numpy as np

    from methodo.stages import write_splits_csv

    perm = np.random.default_rng(n).permutation(n)
    indices = {"train": perm[: int(0.7 * n)], "val": perm[int(0.7 * n): int(0.85 * n)], "test": perm[int(0.85 * n):]}
    rd = RunDir.create(tmp_path / "r", name="x")
    write_splits_csv(rd, indices)
    want = io.StringIO(newline="")
    w = csv.writer(want)
    w.writerow(["row", "split"])
    w.writerows(sorted((int(r), s) for s, rows in indices.items() for r in rows))
    assert (tmp_path / "r" / LAYOUT["splits"]).read_bytes() == want.getvalue().encode()
