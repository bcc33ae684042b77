"""Robustness (issue 17): torchattacks FGSM / PGD / one-pixel, common corruptions, the robustness findings,
adversarial training with before / after, and `methodo robustness RUN_DIR` — on digits, a small sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import EXAMPLES, cli_inproc

SMALL = ("{attacks: [fgsm, pgd, onepixel], eps: [0.05, 0.2], pgd_steps: 3, pixels: [1, 3], onepixel_steps: 5, "
         "onepixel_images: 25, max_images: 120, corruptions: [gaussian_noise, contrast, pixelate], gallery: 4}")
FAST = ["train.epochs=3", "train.threads=1", "track.mlflow=false", "train.progress=false", "explain.enabled=false",
        "evaluate.bootstrap=50", "train.monitor.enabled=false"]


def test_corruptions_keep_range_and_grow_with_severity():
    from methodo.trust.robustness import SEVERITIES, corrupt

    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8 + 0.1
    for name in SEVERITIES:
        dist = []
        for sev in range(1, 6):
            out = corrupt(x, name, sev, seed=0)
            assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1, name
            dist.append(float((out - x).abs().mean()))
        assert dist[0] > 0 and dist[-1] >= dist[0], (name, dist)
    assert torch.equal(corrupt(x, "gaussian_noise", 3, seed=1), corrupt(x, "gaussian_noise", 3, seed=1))


def test_attacks_stay_within_their_budget_in_pixel_units():
    """With the run's standardization handed to torchattacks, eps is in pixel units of [0, 1] images."""
    from methodo.trust.robustness import make_attack

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    x01 = torch.rand(8, 1, 8, 8)
    mean, std = torch.full((1, 1, 1, 1), 0.3), torch.full((1, 1, 1, 1), 0.2)
    y = model((x01 - mean) / std).argmax(1)
    for name in ("fgsm", "pgd"):
        adv = make_attack(model, name, eps=0.03, steps=3, mean=mean, std=std)((x01 - mean) / std, y)
        delta = (adv * std + mean) - x01
        assert float(delta.abs().max()) <= 0.03 + 1e-5 and float(delta.abs().max()) > 0.01, name
    adv = make_attack(model, "onepixel", pixels=1, steps=3, popsize=5, mean=mean, std=std)((x01 - mean) / std, y)
    changed = ((adv * std + mean - x01).abs() > 1e-6).flatten(1).sum(1)
    assert int(changed.max()) <= 1


@pytest.fixture(scope="module")
def adv_run(tmp_path_factory):
    import methodo

    root = tmp_path_factory.mktemp("robust")
    res = methodo.run(EXAMPLES / "digits.yaml", [*FAST, f"evaluate.robustness={SMALL}",
                                                 "train.adversarial={attack: fgsm, eps: 0.2, ratio: 1.0}"],
                      out=root / "run")
    return res


def test_the_run_measures_attacks_corruptions_and_the_effect_of_adversarial_training(adv_run):
    rob = adv_run.summary["robustness"]
    assert rob["images"] == 120 and rob["sample"]["of"] == adv_run.summary["data"]["splits"]["test"]["n"]
    fgsm, pgd = rob["attacks"]["fgsm"], rob["attacks"]["pgd"]
    assert [r["eps"] for r in fgsm] == [0.05, 0.2]
    for a in (fgsm, pgd):  # a larger budget never helps the model (same images, same seed)
        assert a[1]["accuracy"] <= a[0]["accuracy"] <= rob["clean_accuracy"]
        assert all(r["interval"][0] <= r["accuracy"] <= r["interval"][1] for r in a)
    one = rob["attacks"]["onepixel"]
    assert [r["pixels"] for r in one] == [1, 3] and one[1]["fooled"] >= one[0]["fooled"] and one[0]["images"] == 25
    assert set(rob["corruptions"]["accuracy"]) == {"gaussian_noise", "contrast", "pixelate"}
    errs = [1 - a for accs in rob["corruptions"]["accuracy"].values() for a in accs]
    assert rob["corruptions"]["mce"] == pytest.approx(np.mean(errs), abs=1e-3)
    # adversarial training at eps 0.2 (FGSM): the same config without it is measured on the same images
    before = rob["before_adversarial_training"]
    assert before["images"] == rob["images"]
    assert rob["attacks"]["fgsm"][1]["accuracy"] > before["attacks"]["fgsm"][1]["accuracy"]
    for g in rob["gallery"]:
        assert g["before"] == g["true"] != g["after"] and 0 < g["after_conf"] <= 1
    files = {p.name for p in (adv_run.run_dir / "figures").iterdir()}
    assert {"robustness.png", "corruptions.png", "adversarial.png"} <= files
    html = (adv_run.run_dir / "report.html").read_text()
    assert 'id="robustness-attacks"' in html and "accuracy before adversarial training" in html
    assert "Adversarial examples that fool the model" in html
    assert adv_run.summary["timings"]["robustness"] > 0


def test_robustness_command_measures_a_finished_run(adv_run, capsys, tmp_path):
    run_dir = adv_run.run_dir
    before = (run_dir / "summary.json").read_text()
    code, out, err = cli_inproc(capsys, "robustness", str(run_dir), "evaluate.robustness.attacks=[pgd]",
                                "evaluate.robustness.eps=[0.3]", "evaluate.robustness.corruptions=[]",
                                "evaluate.robustness.max_images=60", "train.threads=1", "--out", str(tmp_path / "rob"))
    assert code == 0, err
    assert "60 test images" in out and "pgd" in out and "eps 0.3" in out
    saved = json.loads((tmp_path / "rob" / "robustness.json").read_text())
    assert saved["images"] == 60 and list(saved["attacks"]) == ["pgd"] and "corruptions" not in saved
    assert (tmp_path / "rob" / "figures" / "robustness.png").exists()
    assert (run_dir / "summary.json").read_text() == before  # --out leaves the run as it was
    # without --out: the run's summary, findings and report are updated
    code, out, err = cli_inproc(capsys, "robustness", str(run_dir), "evaluate.robustness.attacks=[fgsm]",
                                "evaluate.robustness.eps=[0.5]", "evaluate.robustness.corruptions=[]",
                                "evaluate.robustness.max_images=60", "train.threads=1")
    assert code == 0, err
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["robustness"]["attacks"]["fgsm"][0]["eps"] == 0.5 and (run_dir / "robustness.json").exists()
    if s["robustness"]["attacks"]["fgsm"][0]["accuracy"] < 0.5 * s["robustness"]["clean_accuracy"]:
        assert "not_robust" not in {f["id"] for f in s["findings"]}  # 0.5 > small_eps: not "a small budget"


def test_not_robust_speaks_for_a_collapse_at_a_small_budget():
    from methodo.trust.findings import RobustnessFacts, not_robust

    rob = {"clean_accuracy": 0.9, "images": 100, "attacks": {"pgd": [{"eps": 0.02, "accuracy": 0.1, "fooled": 80,
                                                                       "interval": [0.05, 0.17]}]}}
    f = not_robust(RobustnessFacts(rob))
    assert f.severity == "high" and f.evidence["eps"] == 0.02 and "train.adversarial" in f.action
    assert not_robust(RobustnessFacts(rob, thresholds={"small_eps": 0.01})) is None


def test_robustness_on_a_table_is_one_error_line(capsys, tmp_path):
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "iris.yaml"), "evaluate.robustness={}", "track.mlflow=false",
                              "--out", str(tmp_path / "r"))
    assert code == 2 and err.startswith("error: evaluate.robustness:") and "image classification" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    code, _, err = cli_inproc(capsys, "run", str(EXAMPLES / "digits.yaml"), "evaluate.robustness.attacks=[deepfool]")
    assert code == 2 and "evaluate.robustness.attacks.0" in err and "fgsm" in err
    code, _, err = cli_inproc(capsys, "robustness", str(tmp_path / "missing"))
    assert code == 2 and err.startswith("error:")


def test_tracked_names():
    from methodo.trust.robustness import tracked_metrics

    assert tracked_metrics({"clean_accuracy": 0.9, "attacks": {"pgd": [{"eps": 0.03, "accuracy": 0.5}],
                                                                "onepixel": [{"pixels": 1, "accuracy": 0.8}]},
                            "corruptions": {"mce": 0.2}}) == {
        "robust_clean_accuracy": 0.9, "robust_pgd_eps0.03_accuracy": 0.5, "robust_onepixel_k1_accuracy": 0.8,
        "corruption_mce": 0.2}


def test_robustness_figures_are_built_unsaved_then_saved(tmp_path):
    """`draw_robustness` / `draw_gallery` return the report's figures (a lab shows them itself);
    `robustness_figure` / `gallery_figure` save the same figures to a file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from methodo.trust.report import draw_gallery, draw_robustness, gallery_figure, robustness_figure

    row = {"accuracy": 0.5, "interval": [0.3, 0.7], "fooled": 4, "fooled_fraction": 0.5, "images": 8}
    rob = {"images": 8, "clean_accuracy": 1.0,
           "attacks": {"fgsm": [{"eps": 0.1, **row}, {"eps": 0.2, **row}], "onepixel": [{"pixels": 1, **row}]}}
    x = np.zeros((1, 8, 8), dtype=np.float32)
    items = [{"attack": "onepixel", "pixels": 1, "original": x, "adversarial": x + 0.5, "before": 3, "after": 8,
              "before_conf": 0.99, "after_conf": 0.6},
             {"attack": "fgsm", "eps": 0.2, "original": x, "adversarial": x + 0.2, "before": 1, "after": 7,
              "before_conf": 0.9, "after_conf": 0.8}]
    gallery = {"items": items, "class_names": [str(i) for i in range(10)]}
    fig = draw_robustness(rob)
    assert len(fig.axes) == 2 and fig.axes[0].get_xlabel().startswith("eps")
    plt.close(fig)
    fig = draw_gallery(gallery)
    assert len(fig.axes) == 4 and fig.axes[2].get_title().startswith("→ 8 (60%)")
    plt.close(fig)
    assert robustness_figure(rob, tmp_path / "r.png").stat().st_size > 0
    assert gallery_figure(gallery, tmp_path / "g.png").stat().st_size > 0
