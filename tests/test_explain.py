"""Explainability: a contract over every registered explainer, the gallery, tabular importance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import methodo
from methodo.explain import EXPLAINERS, attribute, superpixels
from methodo.explain.report import choose_examples, permutation_importance

from conftest import EXAMPLES, FAST


class OnePixel(torch.nn.Module):
    """Class 1's score is 3 × pixel (row 5, col 2); class 0's is constant: only that pixel matters."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1, 8, 8))
        with torch.no_grad():
            self.w[0, 5, 2] = 3.0

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([torch.zeros_like(s), s], 1)


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_explainer_contract(name):
    assert EXPLAINERS.entry(name).help
    model = OnePixel()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5  # positive pixels
    target = torch.tensor([1, 1, 1])
    a = attribute(name, model, x, target, seed=0)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert model.training  # the model's mode is put back
    # the evidence is at (5, 2): for pixel methods that pixel, for patch methods its patch
    for i in range(3):
        flat = a[i, 0].abs()
        r, c = divmod(int(flat.argmax()), 8)
        if name in ("saliency", "integrated_gradients"):
            assert (r, c) == (5, 2), (name, r, c)
        else:
            assert abs(r - 5) <= 2 and abs(c - 2) <= 2, (name, r, c)
        assert float(a[i, 0, 5, 2]) > 0
    b = attribute(name, model, x, target, seed=0)
    assert torch.equal(a, b)  # deterministic for a seed


def test_integrated_gradients_completeness():
    """IG attributions sum to score(x) − score(baseline): exact for this linear model."""
    model = OnePixel()
    x = torch.rand(2, 1, 8, 8)
    a = attribute("integrated_gradients", model, x, torch.tensor([1, 1]))
    torch.testing.assert_close(a.flatten(1).sum(1), 3 * x[:, 0, 5, 2], rtol=1e-4, atol=1e-5)


def test_superpixels_are_square_cells():
    m = superpixels((1, 1, 8, 8), 2)
    assert m.shape == (1, 1, 8, 8) and m.unique().numel() == 16
    assert (m[0, 0, :2, :2] == 0).all() and m[0, 0, 7, 7] == 15


def test_gallery_choice_mixes_wrong_and_right():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    y = np.array([0, 0, 1, 1, 0])
    rows = choose_examples(probs, y, 4)
    assert rows == [1, 2, 0, 3]  # two wrong (most confident first), then two right
    assert choose_examples(probs, np.array([0, 1, 0, 1, 0]), 3) == [0, 3, 1]  # all right: fills with right ones


def test_permutation_importance_finds_the_informative_feature():
    torch.manual_seed(0)
    X = torch.randn(400, 3)
    y = (X[:, 1] > 0).long()
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
        model.weight[1, 1] = 5.0
    imp = permutation_importance(model, X, y, "classification", repeats=3, seed=0)
    assert imp[1][0] > 1.0 and abs(imp[0][0]) < 1e-6 and abs(imp[2][0]) < 1e-6  # cross-entropy increase


def test_image_run_has_a_gallery_and_tabular_run_a_ranked_chart(tmp_path):
    img = methodo.run(str(EXAMPLES / "digits.yaml"), [*FAST, "model.width=8", "explain.n_images=4",
                                                      "explain.methods=[saliency, occlusion]"], out=tmp_path / "i")
    ex = img.summary["explain"]
    assert ex["kind"] == "image" and ex["methods"] == ["saliency", "occlusion"] and len(ex["examples"]) == 4
    flags = [e["correct"] for e in ex["examples"]]
    assert flags == sorted(flags) and flags.count(False) <= 2  # wrong predictions first, at most half
    assert all((e["true"] == e["predicted"]) == e["correct"] for e in ex["examples"])
    wrong_in_test = img.summary["metrics"]["test"]["accuracy"] < 1.0
    assert (False in flags) == wrong_in_test
    assert (tmp_path / "i" / "figures" / "explanations.png").stat().st_size > 10_000
    assert "Explanations (test)" in (tmp_path / "i" / "report.html").read_text()

    tab = methodo.run(str(EXAMPLES / "breast_cancer.yaml"), [*FAST, "explain.permutation_repeats=2"],
                      out=tmp_path / "t")
    ex = tab.summary["explain"]
    assert ex["kind"] == "tabular" and len(ex["features"]) == 30
    perm = [f["permutation_mean"] for f in ex["features"]]
    assert perm == sorted(perm, reverse=True)  # ranked
    assert all(f["integrated_gradients"] >= 0 for f in ex["features"])
    assert (tmp_path / "t" / "figures" / "feature_importance.png").stat().st_size > 10_000
    assert "Feature importance (test)" in (tmp_path / "t" / "report.html").read_text()


def test_unknown_explainer_is_a_config_error():
    from methodo.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        methodo.load_config(EXAMPLES / "digits.yaml", ["explain.methods=[gradcam]"])
    assert "explain.methods" in str(exc.value) and "'saliency'" in str(exc.value)
