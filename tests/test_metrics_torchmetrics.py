"""The classification and regression metrics are torchmetrics' formulas written on the collected predictions
(no torchmetrics import in a run): on random data, with ties, logits, an absent class, float64 scores and
near-constant targets, every value equals torchmetrics' to the last bit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from methodo.evaluate import metrics as M

tm = pytest.importorskip("torchmetrics.functional")
from torchmetrics.functional import classification as tmc  # noqa: E402


def _assert_same(ours, theirs):
    ours, theirs = torch.as_tensor(ours), torch.as_tensor(theirs)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert torch.equal(ours, theirs) or (ours.isnan().all() and theirs.isnan().all()), (ours, theirs)


def _cases():
    rng = np.random.default_rng(0)
    for n, c in ((7, 2), (500, 2), (3000, 2), (400, 3), (1000, 5)):
        y = torch.from_numpy(rng.integers(0, c, n))
        logits = torch.from_numpy(rng.normal(size=(n, c)) * 2 + 1.5 * np.eye(c)[y.numpy()])
        p = torch.softmax(logits, 1).float()
        yield f"n{n}c{c}", p, y, c
        yield f"n{n}c{c}-ties", torch.round(p * 10) / 10, y, c  # many equal scores
        yield f"n{n}c{c}-float64", p.double(), y, c
        yield f"n{n}c{c}-logits", logits.float(), y, c  # outside [0, 1]: sigmoid / softmax first
    y = torch.from_numpy(rng.integers(0, 3, 300))  # class 3 of 4 never present
    yield "absent-class", torch.softmax(torch.from_numpy(rng.normal(size=(300, 4))), 1).float(), y, 4
    y = torch.tensor([0, 1] * 50)
    yield "perfect", torch.nn.functional.one_hot(y, 2).float(), y, 2


@pytest.mark.parametrize("name,p,y,c", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_classification_metrics_equal_torchmetrics_bit_for_bit(name, p, y, c):
    pred = p.argmax(1)
    _assert_same(M.confusion_counts(pred, y, c), tmc.multiclass_confusion_matrix(pred, y, num_classes=c,
                                                                            validate_args=False))
    _assert_same(M.cohen_kappa(p, y, c), tmc.multiclass_cohen_kappa(pred, y, num_classes=c, validate_args=False))
    if c == 2:
        _assert_same(M.roc_auc(p, y, c), tmc.binary_auroc(p[:, 1], y, validate_args=False))
        _assert_same(M.binary_auroc(p[:, 0], 1 - y), tmc.binary_auroc(p[:, 0], 1 - y, validate_args=False))
    else:
        with warnings.catch_warnings():  # torchmetrics warns about the absent class
            warnings.simplefilter("ignore")
            theirs = tmc.multiclass_auroc(p, y, num_classes=c, average="macro", validate_args=False)
        _assert_same(M.roc_auc(p, y, c), theirs)


def test_absent_class_counts_as_zero_in_the_macro_auc_as_in_torchmetrics():
    y = torch.tensor([0, 1, 2] * 20)
    p = torch.nn.functional.one_hot(y, 4).float()  # perfect on the 3 classes present, class 3 absent
    assert float(M.roc_auc(p, y, 4)) == 0.75


def _regression_cases():
    rng = np.random.default_rng(1)
    for n in (2, 50, 10_000):
        y = torch.from_numpy(rng.normal(size=n) * 3).float()
        yield f"n{n}", y + torch.from_numpy(rng.normal(size=n)).float(), y
        yield f"n{n}-float64", (y + 0.1).double(), y.double()
    y = torch.full((40,), 2.5)
    yield "constant-target", y + torch.from_numpy(rng.normal(size=40)).float(), y  # R² 0
    y = torch.from_numpy(rng.normal(size=40)).float()
    yield "perfect", y.clone(), y  # R² 1
    yield "tiny-residuals", y + 1e-4, y


@pytest.mark.parametrize("name,p,y", list(_regression_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_regression_metrics_equal_torchmetrics_bit_for_bit(name, p, y):
    _assert_same(M.mae(p, y, 0), tm.mean_absolute_error(p, y))
    _assert_same(M.rmse(p, y, 0), tm.mean_squared_error(p, y).sqrt())
    _assert_same(M.r2(p, y, 0), tm.r2_score(p, y))


def test_multilabel_auc_equals_torchmetrics():
    rng = np.random.default_rng(2)
    y = torch.from_numpy(rng.integers(0, 2, (200, 4)))
    p = torch.rand(200, 4, generator=torch.Generator().manual_seed(0))
    want = float(np.mean([float(tmc.binary_auroc(p[:, k], y[:, k], validate_args=False)) for k in range(4)]))
    assert M.roc_auc_macro(p, y, 4) == want


def test_a_run_never_imports_torchmetrics(tmp_path):
    """Evaluating a classification and a regression split does not import torchmetrics (seconds of imports)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from methodo.evaluate import compute_metrics, classification_tables\n"
            "y = np.array([0, 1, 1, 0, 1]); p = np.array([[.8, .2], [.3, .7], [.6, .4], [.9, .1], [.2, .8]], 'f4')\n"
            "compute_metrics('classification', p, y, 2); classification_tables(p, y, ['a', 'b'])\n"
            "compute_metrics('regression', p[:, 0], p[:, 1])\n"
            "print('torchmetrics' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
