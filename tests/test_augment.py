"""Augmentation: every registered step, batched with per-image randomness, equal to torchvision v2 where
torchvision has the same operation, applied to training batches only; the preview gallery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from methodo.config import validate
from methodo.data import load_dataset, prepare
from methodo.data.augment import AUGMENTATIONS, AugmentPipeline, build_steps
from methodo.errors import ConfigError

from conftest import cli_inproc, write_yaml

# options that make each step act on every image (p=1), so the contract can see it act
ALWAYS = {"flip": {"p": 1.0}, "grayscale": {"p": 1.0}, "detexture": {"p": 1.0}, "edge_enhance": {"p": 1.0},
          "edge_map": {"p": 1.0}, "erase": {"p": 1.0}, "normalize": {"mean": [0.5], "std": [0.25]}}
RANDOM_PER_IMAGE = {"rotation", "random_resized_crop", "color_jitter", "erase"}


def _smooth_batch(n, c, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, c, 4, 4, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_contract(name, channels):
    step = build_steps([{name: ALWAYS.get(name, {})}])[0]
    x = _smooth_batch(6, channels)
    x_copy = x.clone()
    one = torch.stack([x[0]] * 6)  # six copies of one image
    out = step(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert torch.equal(x, x_copy)  # the input batch is not modified in place
    again = step(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # same generator state, same result
    if name != "normalize":
        assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6  # stays an image in [0, 1]
    if not (name == "grayscale" and channels == 1):  # a gray image has nothing to de-color
        assert not torch.allclose(out, x), "the step did nothing with p=1"
    copies = step(one, torch.Generator().manual_seed(1))
    differ = any(not torch.allclose(copies[0], copies[i]) for i in range(1, 6))
    if name in RANDOM_PER_IMAGE:
        assert differ, "one batch must get different random parameters per image"
    elif name not in ("flip",):
        assert not differ
    ref = step.reference()  # the per-image torchvision v2 transform exists and keeps the shape
    assert ref(x[0]).shape == x[0].shape
    assert AUGMENTATIONS.entry(name).help


def test_batched_steps_equal_torchvision_where_it_has_the_operation():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    x = _smooth_batch(5, 3)
    rot = build_steps([{"rotation": {"degrees": [30, 30]}}])[0](x, g())
    ref = torch.stack([TF.rotate(i, 30.0, interpolation=TF.InterpolationMode.BILINEAR) for i in x])
    torch.testing.assert_close(rot, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(build_steps([{"flip": {"p": 1.0}}])[0](x, g()), TF.horizontal_flip(x))
    torch.testing.assert_close(build_steps([{"grayscale": {"p": 1.0}}])[0](x, g()),
                               TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6, rtol=0)
    torch.testing.assert_close(build_steps([{"edge_enhance": {"p": 1.0, "factor": 3.0}}])[0](x, g()),
                               TF.adjust_sharpness(x, 3.0))
    torch.testing.assert_close(build_steps([{"detexture": {"method": "gaussian", "kernel": 5, "p": 1.0}}])[0](x, g()),
                               TF.gaussian_blur(x, [5, 5], [2.0, 2.0]))
    full = build_steps([{"random_resized_crop": {"scale": [1, 1], "ratio": [1, 1]}}])[0](x, g())
    torch.testing.assert_close(full, x, atol=1e-5, rtol=0)  # the whole image: unchanged


def test_detexture_removes_texture_but_keeps_edges():
    x = torch.zeros(1, 1, 24, 24)
    x[..., :, 12:] = 0.8  # one strong edge
    noisy = (x + 0.05 * torch.randn(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    for method in ("bilateral", "median"):
        out = build_steps([{"detexture": {"method": method, "p": 1.0}}])[0](noisy, None)
        assert (out - x)[..., 2:-2, 2:10].std() < 0.5 * (noisy - x)[..., 2:-2, 2:10].std()  # flat area smoothed
        assert out[..., 12, 13].item() - out[..., 12, 10].item() > 0.6  # the edge stays sharp


def test_edge_map_is_zero_on_flat_regions_and_peaks_on_edges():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 4:12, 4:12] = 1.0
    e = build_steps([{"edge_map": {"p": 1.0}}])[0](x, None)
    assert e[0, 0, 8, 8] < 1e-6 and e[0, 0, 0, 0] < 1e-6 and e.max() == pytest.approx(1.0)
    assert e[0, 0, 8, 4] > 0.5 and torch.equal(e[0, 0], e[0, 2])


def test_augmentation_runs_on_training_batches_only():
    from methodo.evaluate import predict
    from methodo.models import build_model
    from methodo.train.loop import fit

    cfg = validate({"data": {"source": "digits", "augment": ["flip", {"rotation": {"degrees": 10}}]},
                    "model": {"name": "mlp"}, "train": {"epochs": 1, "batch_size": 256, "progress": False,
                                                        "early_stopping": None}})
    data = prepare(load_dataset(cfg.data), cfg.data, seed=0)
    assert isinstance(data.augment, AugmentPipeline) and len(data.augment.steps) == 2
    seen = []
    real = data.augment

    def spy(xb):
        seen.append(len(xb))
        return real(xb)

    data.augment = spy
    before = {s: t[0].clone() for s, t in data.tensors.items()}
    model = build_model("mlp", input_shape=data.input_shape, n_outputs=10)
    fit(model, data, cfg.train, seed=0)
    assert sum(seen) == len(data.indices["train"]) and len(seen) == 5  # every training batch, once
    predict(model, data.tensors["test"][0], task="classification", batch_size=64)
    assert sum(seen) == len(data.indices["train"])  # evaluation never augments
    assert all(torch.equal(before[s], data.tensors[s][0]) for s in before)  # stored tensors untouched
    # standardized in, standardized out: the pipeline maps back to [0, 1], augments, re-standardizes
    xb = data.tensors["train"][0][:64]
    ident = AugmentPipeline([{"rotation": {"degrees": [0, 0]}}], seed=0, mean=real.mean, std=real.std)
    torch.testing.assert_close(ident(xb), xb, atol=1e-4, rtol=0)


def test_fixed_normalize_applies_to_every_split():
    cfg = validate({"data": {"source": "digits", "augment": [{"normalize": {"mean": [0.3], "std": [0.4]}}]},
                    "model": {"name": "cnn"}})
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, seed=0)
    assert data.preprocessor.scale == "fixed" and data.augment is None  # not a training-only step
    for s, rows in data.indices.items():
        np.testing.assert_allclose(data.tensors[s][0].numpy(), (ds.X[rows] - 0.3) / 0.4, atol=1e-5)


def test_augment_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data.augment.1: unknown augmentation 'blur'; choose one of .*'detexture'"):
        validate({"data": {"source": "digits", "augment": ["flip", "blur"]}, "model": {"name": "cnn"}})
    with pytest.raises(ConfigError, match=r"data.augment.0.degree: option not accepted.*'degrees'"):
        validate({"data": {"source": "digits", "augment": [{"rotation": {"degree": 3}}]}, "model": {"name": "cnn"}})
    with pytest.raises(ConfigError, match=r"data.augment.0.method: .*'bilateral'"):
        validate({"data": {"source": "digits", "augment": [{"detexture": {"method": "wavelet"}}]},
                  "model": {"name": "cnn"}})
    cfg = validate({"data": {"source": "wine", "augment": ["flip"]}, "model": {"name": "mlp"}})
    with pytest.raises(ConfigError, match="data.augment: augmentations work on images"):
        prepare(load_dataset(cfg.data), cfg.data, seed=0)


def test_preview_writes_the_gallery(tmp_path, capsys):
    from PIL import Image

    cfg = write_yaml(tmp_path / "c.yaml", """\
data:
  source: digits
  augment: [{rotation: {degrees: 20}}, {random_resized_crop: {scale: [0.7, 1]}}, {edge_map: {p: 0.5}}]
model: {name: cnn}
""")
    code, out, err = cli_inproc(capsys, "data", "preview", str(cfg), "--out", str(tmp_path / "grid.png"),
                                "--n", "4", "--copies", "3")
    assert code == 0, err
    assert "4 training images × 3 augmented copies" in out
    img = Image.open(tmp_path / "grid.png")
    assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 300
    code, _, err = cli_inproc(capsys, "data", "preview", str(cfg), "data.augment=[]", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "nothing to preview" in err


def test_run_with_augmentation_puts_the_gallery_in_the_report(tmp_path):
    import methodo

    res = methodo.run(validate({"name": "aug", "data": {"source": "digits", "augment": ["flip", "erase"]},
                                "model": {"name": "mlp", "hidden": [32]},
                                "train": {"epochs": 1, "progress": False}, "track": {"mlflow": False}}),
                      out=tmp_path / "r")
    assert (tmp_path / "r" / "figures" / "augmentation.png").is_file()
    html = (tmp_path / "r" / "report.html").read_text()
    assert "Augmentation gallery" in html
    assert res.summary["data"]["augment"] == ["flip", "erase"]
