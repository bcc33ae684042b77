"""Knowledge distillation (issue 13, item 7): the teacher's soft targets cached once per training row, the
loss mix, teacher / distilled student / scratch student side by side, and the checks on a teacher run dir.

Small models on digits, 2 epochs: the numbers are asserted as relations the method guarantees (alpha 0 is
the scratch student exactly; the soft targets are the teacher's), never as hard-coded accuracies.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import with_keys

import methodo
from methodo.config import validate
from methodo.errors import ConfigError


def _cfg(**over) -> dict:
    base = {"name": "d", "data": {"source": "digits"}, "model": {"name": "mlp", "hidden": [16]},
            "train": {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.003}, "progress": False},
            "track": {"mlflow": False}, "explain": {"enabled": False}, "evaluate": {"bootstrap": 20}}
    return with_keys(base, over)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    methodo.run(validate(_cfg(**{"model": {"name": "mlp", "hidden": [64, 32]}, "train.epochs": 3})), out=out)
    return out


def test_the_soft_loss_is_zero_on_the_teachers_own_logits_and_alpha_weighs_the_hard_loss():
    from methodo.transfer.distill import DistillLoss

    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    T = 3.0
    hard = lambda out, y: torch.nn.functional.cross_entropy(out, y)  # noqa: E731
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    rows = torch.tensor([5, 0, 2])
    for alpha in (0.0, 0.3, 1.0):
        loss = DistillLoss(torch.softmax(logits / T, 1), temperature=T, alpha=alpha, hard=hard)
        extra = loss(None, logits[rows], None, y[rows], rows)
        # KL of the teacher's own logits is 0: the term is −alpha × CE, so data loss + term = (1 − alpha) CE
        assert torch.allclose(extra, -alpha * hard(logits[rows], y[rows]), atol=1e-6)
    other = torch.randn(3, 4)
    loss = DistillLoss(torch.softmax(logits / T, 1), temperature=T, alpha=1.0, hard=lambda o, t: o.sum() * 0)
    kl = torch.nn.functional.kl_div(torch.log_softmax(other / T, 1), torch.softmax(logits[rows] / T, 1),
                                    reduction="batchmean")
    assert torch.allclose(loss(None, other, None, y[rows], rows), T * T * kl)


def test_input_map_undoes_the_students_scaling_and_applies_the_teachers():
    from methodo.data.preprocess import Preprocessor
    from methodo.transfer.distill import _input_map

    rng = np.random.default_rng(0)
    raw = rng.random((5, 2, 4, 4)).astype(np.float32)
    student = Preprocessor().fit(raw, np.zeros(5), "classification")
    teacher = Preprocessor.fixed([0.5, 0.2], [0.25, 0.1], channels=2)
    f = _input_map(student, teacher)
    got = f(torch.from_numpy(student.transform_x(raw)))
    assert torch.allclose(got, torch.from_numpy(teacher.transform_x(raw)), atol=1e-5)
    same = _input_map(student, student)
    x = torch.from_numpy(student.transform_x(raw))
    assert same(x) is x  # the same scaling: the very tensors


def test_model_spec_teacher_is_trained_and_put_side_by_side_with_the_scratch_student(tmp_path):
    res = methodo.run(validate(_cfg(**{"distill": {"teacher": {"name": "mlp", "hidden": [64, 32], "epochs": 3},
                                                   "temperature": 3.0, "alpha": 0.7}})), out=tmp_path / "s")
    s = json.loads((tmp_path / "s" / "summary.json").read_text())
    d = s["transfer"]["distill"]
    n_train = s["data"]["splits"]["train"]["n"]
    assert d["teacher"]["soft_targets"]["rows"] == n_train and d["teacher"]["soft_targets"]["classes"] == 10
    assert d["teacher"]["kind"] == "model" and d["teacher"]["epochs_run"] == 3
    assert d["teacher"]["parameters"] > d["student"]["parameters"] == d["scratch"]["parameters"]
    assert d["student"]["metrics"]["accuracy"] == pytest.approx(s["metrics"]["test"]["accuracy"])
    for who in ("teacher", "student", "scratch"):
        lo, hi = d[who]["intervals"]["accuracy"]
        assert lo <= d[who]["metrics"]["accuracy"] <= hi and d[who]["seconds_per_sample"] > 0
    assert d["difference"] == pytest.approx(d["student"]["metrics"]["accuracy"] - d["scratch"]["metrics"]["accuracy"],
                                            abs=1e-6)
    assert d["beats_scratch"] == (d["difference_interval"][0] > 0)
    assert ("did not" in d["verdict"]) != d["beats_scratch"]
    assert s["transfer"]["scratch"]["metrics"]["accuracy"] == d["scratch"]["metrics"]["accuracy"]
    assert "teacher" in s["timings"] and "distill" in s["timings"]
    ids = [f["id"] for f in s["findings"]]
    assert ("distillation_not_helping" in ids) == (not d["beats_scratch"]) and "pretrained_not_helping" not in ids
    html = (tmp_path / "s" / "report.html").read_text()
    assert 'id="distill"' in html and ("Distillation helped" in html) == d["beats_scratch"]
    assert res.status == "finished"


def test_alpha_zero_is_the_scratch_student_exactly(teacher_run, tmp_path):
    """With alpha 0 the teacher's term weighs nothing: the student is the scratch student, step for step
    (same initial weights, same batches) — the scratch comparison really has the same budget."""
    methodo.run(validate(_cfg(**{"distill": {"teacher": str(teacher_run), "alpha": 0.0}})), out=tmp_path / "a0")
    d = json.loads((tmp_path / "a0" / "summary.json").read_text())["transfer"]["distill"]
    assert d["student"]["metrics"] == d["scratch"]["metrics"] and d["difference"] == 0
    assert d["teacher"]["kind"] == "run" and d["teacher"]["run"] == str(teacher_run)
    t = json.loads((teacher_run / "summary.json").read_text())
    assert d["teacher"]["metrics"]["accuracy"] == pytest.approx(t["metrics"]["test"]["accuracy"])  # its own test


def test_teacher_run_dir_checks(teacher_run, tmp_path, capsys):
    from methodo.cli import main

    with pytest.raises(ConfigError, match="distill.teacher.*not a methodo run dir"):
        validate(_cfg(**{"distill": {"teacher": str(tmp_path)}}))
    with pytest.raises(ConfigError, match=r"distill.teacher.width.*"):
        validate(_cfg(**{"distill": {"teacher": {"name": "cnn", "width": 0}}}))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(_cfg()))
    cases = {  # override → what the one error line names
        "seed=1": "trained on .* of this run's .* test rows",  # another split: the teacher saw the student's test rows
        "data.source=iris": "predicts the classes",
    }
    for override, msg in cases.items():
        out = tmp_path / override.replace("=", "_")
        assert main(["run", str(cfg), f"distill.teacher={teacher_run}", override, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "distill.teacher" in err[0]
        assert __import__("re").search(msg, err[0]), err[0]
        assert not out.exists()  # nothing written
    assert main(["run", str(cfg), "data.source=diabetes", "distill.teacher.name=mlp", "--out", str(tmp_path / "r")]) == 2
    assert "classification only" in capsys.readouterr().err
