"""Property-based fuzzing (Hypothesis) of commands that read a run dir someone else may have damaged or
crafted: `methodo report DIR` and `methodo run --resume DIR` on a finished run whose files are truncated,
overwritten, swapped, deleted, turned into folders or into links. Whatever the damage: exit 0 or 2 (3 for a
run that started and failed), at most one `error:` line, no traceback, no file written outside the run
dir, and a run dir left exactly as it was when the command did not succeed."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import methodo

from conftest import EXAMPLES, FAST, cli_inproc
from test_rundir_hardening import _snapshot

FILES = ["summary.json", "config.yaml", "preprocessor.json", "metrics.csv", "report.html",
         "checkpoints/last.safetensors", "checkpoints/best.safetensors", "figures/learning_curves.png",
         "figures/confusion_matrix.png", "figures"]

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.integers(0, 64)),
    st.tuples(st.just("garbage"), st.sampled_from(FILES), st.binary(max_size=48)),
    st.tuples(st.just("swap"), st.sampled_from(FILES), st.sampled_from(FILES)),
    st.tuples(st.just("delete"), st.sampled_from(FILES), st.just(None)),
    st.tuples(st.just("folder"), st.sampled_from(FILES), st.just(None)),
    st.tuples(st.just("link_out"), st.sampled_from(FILES), st.just(None)),
    st.tuples(st.just("link_in"), st.sampled_from(FILES), st.sampled_from(FILES)),
    st.tuples(st.just("summary_key"), st.sampled_from(["status", "seed", "metrics", "findings", "data", "threshold",
                                                        "training", "best_epoch", "name", "kfold", "extra"]),
              st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=6)),
)


def _remove(p):
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)


def _apply(d, outside, m):
    try:
        _mutate(d, outside, m)
    except OSError:  # the damage itself cannot be done (e.g. a file inside a path that is now a file)
        pass


def _mutate(d, outside, m):
    kind, a, b = m
    p = d / a
    if kind == "truncate" and p.is_file() and not p.is_symlink():
        p.write_bytes(p.read_bytes()[:b])
    elif kind == "garbage" and not p.is_dir():
        _remove(p)
        p.write_bytes(b)
    elif kind == "swap" and p.exists() and (d / b).exists() and a != b:
        tmp = d / ".swap"
        os.rename(p, tmp)
        os.rename(d / b, p)
        os.rename(tmp, d / b)
    elif kind == "delete":
        _remove(p)
    elif kind == "folder":
        _remove(p)
        p.mkdir()
    elif kind == "link_out":
        _remove(p)
        os.symlink(outside, p)
    elif kind == "link_in" and a != b and (d / b).exists():
        _remove(p)
        os.symlink(d / b, p)
    elif kind == "summary_key" and (d / "summary.json").is_file() and not (d / "summary.json").is_symlink():
        try:
            s = json.loads((d / "summary.json").read_text())
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(s, dict):
            s[a] = b
            (d / "summary.json").write_text(json.dumps(s))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("fz") / "run"
    methodo.run(str(EXAMPLES / "iris.yaml"), [*FAST, "evaluate.bootstrap=0", "explain.enabled=false"], out=out)
    return out


def _damaged_copy(finished, root, muts):
    """A copy of the finished run under ``root`` with the damage applied (and a secret file beside it to
    link to); returns ``(root, run dir, its snapshot, root's listing)``."""
    d = root / "run"
    shutil.copytree(finished, d, symlinks=True)
    outside = root / "outside.txt"
    outside.write_text("root:x:0:0\n")
    for m in muts:
        _apply(d, outside, m)
    return root, d, _snapshot(d), sorted(p.name for p in root.iterdir())


def _check(code, err, d, before, listing_before, root):
    assert code in (0, 2, 3), err
    assert "Traceback" not in err and err.count("error:") <= 1, err
    if code != 0:
        assert _snapshot(d) == before
    assert sorted(p.name for p in root.iterdir()) == listing_before  # nothing written beside the run dir


# no shrinking phase: a failure is reported as generated, so the suite's time stays bounded
FUZZ = dict(derandomize=True, deadline=None, suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.reuse, Phase.generate])


@settings(max_examples=40, **FUZZ)
@given(muts=st.lists(mutation, min_size=1, max_size=3))
def test_report_survives_any_damage(finished, tmp_path_factory, capsys, muts):
    root, d, before, listing = _damaged_copy(finished, tmp_path_factory.mktemp("rep"), muts)
    code, _, err = cli_inproc(capsys, "report", str(d))
    _check(code, err, d, before, listing, root)
    if code == 0:
        assert "root:x:0:0" not in (d / "report.html").read_text()


@settings(max_examples=16, **FUZZ)
@given(muts=st.lists(mutation, min_size=1, max_size=2))
def test_resume_survives_any_damage(finished, tmp_path_factory, capsys, muts):
    root, d, before, listing = _damaged_copy(finished, tmp_path_factory.mktemp("res"), muts)
    code, _, err = cli_inproc(capsys, "run", "--resume", str(d), "track.mlflow=false")
    _check(code, err, d, before, listing, root)
