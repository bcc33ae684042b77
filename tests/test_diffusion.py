"""Diffusion (issue 18 item 4): the DDPM math, the ddpm model, the generation task end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli_inproc

@pytest.fixture(autouse=True)
def _one_thread():
    """Small 8×8 convolutions: one thread (a second one spins waiting on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "digits_ddpm.yaml")


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_goes_from_almost_clean_to_almost_pure_noise(name):
    from methodo.models.diffusion import beta_schedule

    for steps in (10, 100, 1000):
        b = beta_schedule(name, steps)
        abar = torch.cumprod(1 - b, 0)
        assert b.shape == (steps,) and bool((b > 0).all()) and bool((b < 1).all())
        assert bool((abar[1:] < abar[:-1]).all())  # each step adds noise
        assert float(abar[0]) > 0.9 and float(abar[-1]) < 0.01, (steps, float(abar[0]), float(abar[-1]))


def test_forward_noising_has_the_mean_and_variance_of_q_xt_given_x0():
    from methodo.models.diffusion import ddpm

    m = ddpm(input_shape=(1, 8, 8), n_outputs=1, width=8, steps=50)
    x0 = torch.full((20_000, 1, 1, 1), 0.7)
    for i in (0, 10, 49):
        t = torch.full((len(x0),), i)
        xt = m.noise(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(i)))
        a = float(m.abar[i])
        assert float(xt.mean()) == pytest.approx(math.sqrt(a) * 0.7, abs=0.03)
        assert float(xt.var()) == pytest.approx(1 - a, abs=0.03)


def test_model_returns_prediction_and_drawn_noise_seeded_by_the_global_generator():
    from methodo.models.diffusion import ddpm

    m = ddpm(input_shape=(1, 8, 8), n_outputs=1, width=8, steps=20).train()
    x = torch.rand(5, 1, 8, 8)
    torch.manual_seed(3)
    with torch.no_grad():
        a = m(x)
        torch.manual_seed(3)
        b = m(x)
        c = m(x)
    assert a.shape == (5, 2, 1, 8, 8) and torch.equal(a, b) and not torch.equal(b[:, 1], c[:, 1])
    assert abs(float(a[:, 1].mean())) < 0.5 and 0.5 < float(a[:, 1].std()) < 1.5  # ε ~ N(0, I)
    m.eval()  # evaluation: the same t and ε every time, whatever the global generator
    torch.manual_seed(99)
    e1 = m(x)
    e2 = m(x)
    assert torch.equal(e1, e2)


def test_training_the_denoiser_lowers_the_noise_mse_below_the_zero_predictor():
    from methodo.models.diffusion import ddpm
    from methodo.tasks import task_spec

    spec = task_spec("generation")
    torch.manual_seed(0)
    x = torch.zeros(16, 1, 8, 8)
    x[:, :, 2:6, 3:5] = 1.0  # one fixed bar: easy to denoise
    m = ddpm(input_shape=(1, 8, 8), n_outputs=1, width=8, levels=1, steps=20)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = spec.loss(m(x), None)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-10:])
    assert np.mean(losses[-10:]) < spec.baselines(None, None, 0, 0)["zero_noise"]["noise_mse"]


def test_sampling_gives_images_in_0_1_of_the_right_shape_reproducibly_and_the_chain_from_T_to_0():
    from methodo.models.diffusion import ddpm, sample_images

    m = ddpm(input_shape=(1, 8, 8), n_outputs=1, width=8, steps=12)
    mean, std = np.full((1, 1, 1, 1), 0.3, np.float32), np.full((1, 1, 1, 1), 0.4, np.float32)
    x, chain = sample_images(m, 4, (1, 8, 8), seed=5, mean=mean, std=std, keep=5)
    y, _ = sample_images(m, 4, (1, 8, 8), seed=5, mean=mean, std=std)
    z, _ = sample_images(m, 4, (1, 8, 8), seed=6, mean=mean, std=std)
    assert x.shape == (4, 1, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, y) and not torch.equal(x, z)
    ts = [t for t, _ in chain]
    assert ts[0] == 12 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert torch.equal(chain[-1][1], x)  # the chain ends at the sample


def test_class_entropy_and_gaussian_baseline():
    from methodo.tasks.generation import _entropy, gaussian_samples

    assert _entropy(np.arange(100) % 10, 10) == pytest.approx(1.0)
    assert _entropy(np.zeros(50, dtype=int), 10) == 0.0
    rng = np.random.default_rng(0)
    train = rng.uniform(0.2, 0.6, size=(500, 1, 4, 4)).astype(np.float32)
    g = gaussian_samples(train, 2000, seed=0)
    assert g.shape == (2000, 1, 4, 4) and g.min() >= 0 and g.max() <= 1
    assert np.allclose(g.mean(0), train.mean(0), atol=0.02)


def test_ddpm_options_are_checked_at_config_time(tmp_path, capsys):
    code, _, err = cli_inproc(capsys, "run", EXAMPLE, "model.schedule=quadratic",
                              "--out", str(tmp_path / "r"))
    assert code == 2 and "schedule" in err and "linear" in err and "cosine" in err
    code, _, err = cli_inproc(capsys, "run", EXAMPLE, "model.name=cnn",
                              "--out", str(tmp_path / "r"))
    assert code == 2 and "ddpm" in err and "generation" in err
    code, _, err = cli_inproc(capsys, "run", EXAMPLE, "data.source=diabetes",
                              "--out", str(tmp_path / "r"))
    assert code == 2 and "regression" in err and "generation" in err
    assert not (tmp_path / "r").exists()


def test_generation_run_end_to_end(tmp_path, capsys, monkeypatch):
    """A tiny run: the denoising metric beside its baseline, samples scored beside real and Gaussian ones,
    the reverse chain and per-epoch sample grids in the run dir."""
    from methodo.tasks import generation

    monkeypatch.setattr(generation, "SAMPLES", 60)
    monkeypatch.setattr(generation, "CLASSIFIER", {**generation.CLASSIFIER, "epochs": 3})
    args = ["model.width=8", "model.levels=1", "model.steps=10", "train.epochs=2", "train.threads=1",
            "track.mlflow=false", "evaluate.bootstrap=50"]
    out, twin = tmp_path / "run", tmp_path / "twin"
    for d in (out, twin):
        code, _, err = cli_inproc(capsys, "run", EXAMPLE, *args, "--out", str(d))
        assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    t = json.loads((twin / "summary.json").read_text())
    # deterministic: the seeded draws of t and the noise, the samples and the scoring classifier
    assert s["metrics"] == t["metrics"] and s["generation"] == t["generation"]
    assert s["task"] == "generation" and s["status"] == "finished"
    assert 0 < s["metrics"]["test"]["noise_mse"] < s["baselines"]["zero_noise"]["noise_mse"]
    lo, hi = s["intervals"]["test"]["noise_mse"]
    assert lo <= s["metrics"]["test"]["noise_mse"] <= hi
    scores = s["generation"]["scores"]
    assert set(scores) == {"real_test", "model", "gaussian"}
    assert scores["model"]["images"] == scores["gaussian"]["images"] == 60
    assert scores["real_test"]["accuracy"] > 0.5  # the scoring classifier reads real digits
    for v in scores.values():
        assert 0 <= v["confidence"] <= 1 and 0 <= v["class_entropy"] <= 1
        assert v["intervals"]["confidence"][0] <= v["confidence"] <= v["intervals"]["confidence"][1]
        assert sum(v["class_counts"]) == v["images"]
    figs = {p.name for p in (out / "figures").iterdir()}
    assert {"diffusion_chain.png", "samples.png", "samples_epoch_001.png", "samples_epoch_002.png"} <= figs
    html = (out / "report.html").read_text()
    assert 'id="generation"' in html and "Reverse diffusion" in html and "Samples after epoch 2" in html
