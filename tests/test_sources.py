"""Image folder, MNIST, Fashion-MNIST and CIFAR-10 sources, on small files written in the real formats."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from methodo.config import validate
from methodo.data import load_dataset, split_dataset
from methodo.errors import DataError

from conftest import cli_inproc, write_yaml


def _cfg(**data):
    return validate({"data": data, "model": {"name": "mlp"}})


# --------------------------------------------------------------------------- image folder


def _folder(root: Path) -> Path:
    """cat/: RGB PNG, RGBA PNG (left half transparent), JPEG; dog/: grayscale PNG, RGB PNG."""
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb, "RGB").save(root / "cat" / "a.png")
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[:, 3:, 3] = 255  # right half opaque blue, left half fully transparent
    Image.fromarray(rgba, "RGBA").save(root / "cat" / "b.png")
    Image.fromarray(np.full((6, 6, 3), 90, np.uint8), "RGB").save(root / "cat" / "c.jpg", quality=95)
    Image.fromarray(np.full((6, 6), 128, np.uint8), "L").save(root / "dog" / "d.png")
    Image.fromarray(np.full((6, 6, 3), 30, np.uint8), "RGB").save(root / "dog" / "e.PNG")
    (root / "dog" / "notes.txt").write_text("not an image, and not named like one: ignored")
    return root


def test_image_folder_converts_rgb_rgba_gray_consistently(tmp_path):
    ds = load_dataset(_cfg(source="imagefolder", path=str(_folder(tmp_path / "imgs"))).data)
    assert ds.kind == "image" and ds.class_names == ["cat", "dog"]
    assert ds.X.shape == (5, 3, 6, 6) and ds.X.dtype == np.float32
    assert ds.y.tolist() == [0, 0, 0, 1, 1]
    names = [Path(p).name for p in ds.meta["path"]]
    assert names == ["a.png", "b.png", "c.jpg", "d.png", "e.PNG"]
    np.testing.assert_allclose(ds.X[0, :, 0, 0], [200 / 255, 0, 0], atol=1e-6)
    # RGBA: transparent pixels are composited on white, opaque ones keep their color
    np.testing.assert_allclose(ds.X[1, :, 0, 0], [1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(ds.X[1, :, 0, 5], [0, 0, 1], atol=1e-6)
    # grayscale in a color folder: the same value on the three channels
    np.testing.assert_allclose(ds.X[3, :, 2, 2], [128 / 255] * 3, atol=1e-6)
    assert abs(ds.X[2].mean() - 90 / 255) < 3 / 255  # JPEG: close to the stored value


def test_all_gray_folder_is_one_channel_and_sizes_must_agree(tmp_path):
    root = tmp_path / "g"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((4, 5), 10 * i, np.uint8), "L").save(root / c / f"{i}.png")
    ds = load_dataset(_cfg(source="imagefolder", path=str(root)).data)
    assert ds.X.shape == (4, 1, 4, 5)
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(root / "b" / "big.png")
    with pytest.raises(DataError, match=r"different sizes .*set data.image_size"):
        load_dataset(_cfg(source="imagefolder", path=str(root)).data)
    ds = load_dataset(_cfg(source="imagefolder", path=str(root), image_size=[6, 7]).data)
    assert ds.X.shape == (5, 1, 6, 7)


def test_group_split_on_image_paths(tmp_path):
    root = tmp_path / "p"
    rng = np.random.default_rng(0)
    for c in ("healthy", "sick"):
        (root / c).mkdir(parents=True)
        for patient in range(6):
            for s in range(3):
                arr = rng.integers(0, 255, (4, 4), dtype=np.uint8)
                Image.fromarray(arr, "L").save(root / c / f"patient{patient}{c[0]}_slice{s}.png")
    cfg = _cfg(source="imagefolder", path=str(root), split={"method": "group", "group": r"(patient\d+\w)_",
                                                             "val": 0.2, "test": 0.2})
    ds = load_dataset(cfg.data)
    parts = split_dataset(ds, cfg.data, seed=0)
    patient = {s: {Path(p).name.split("_")[0] for p in ds.meta["path"][idx]} for s, idx in parts.items()}
    assert patient["train"].isdisjoint(patient["test"]) and patient["train"].isdisjoint(patient["val"])
    assert patient["val"].isdisjoint(patient["test"])
    assert sum(len(v) for v in patient.values()) == 12


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST


def _idx_images(path: Path, arr: np.ndarray) -> None:
    n, h, w = arr.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + arr.astype(np.uint8).tobytes())


def _idx_labels(path: Path, y: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(y)) + y.astype(np.uint8).tobytes())


@pytest.mark.parametrize("source,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_reads_idx_files_through_torchvision(tmp_path, source, folder):
    raw = tmp_path / "data" / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    tr_x, te_x = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 256, (10, 28, 28))
    tr_y, te_y = np.arange(30) % 10, np.arange(10) % 10
    _idx_images(raw / "train-images-idx3-ubyte", tr_x)
    _idx_labels(raw / "train-labels-idx1-ubyte", tr_y)
    _idx_images(raw / "t10k-images-idx3-ubyte", te_x)
    _idx_labels(raw / "t10k-labels-idx1-ubyte", te_y)
    cfg = _cfg(source=source, path=str(tmp_path / "data"), download=False,
               split={"method": "official", "val": 0.4})
    ds = load_dataset(cfg.data)
    assert ds.X.shape == (40, 1, 28, 28) and ds.n_classes == 10
    np.testing.assert_allclose(ds.X[3, 0], tr_x[3] / 255, atol=1e-6)
    np.testing.assert_allclose(ds.X[35, 0], te_x[5] / 255, atol=1e-6)
    assert ds.official_test.sum() == 10
    parts = split_dataset(ds, cfg.data, seed=0)
    assert parts["test"].tolist() == list(range(30, 40))  # the official test images, untouched
    assert len(parts["val"]) == 12 and len(parts["train"]) == 18


def test_mnist_offline_error_says_which_files_to_put_where(tmp_path, capsys):
    code, _, err = cli_inproc(capsys, "data", "inspect", str(write_yaml(tmp_path / "c.yaml", f"""\
data: {{source: mnist, path: {tmp_path / 'none'}, download: false}}
model: {{name: mlp}}
""")))
    assert code == 2
    line = err.strip()
    assert line.startswith("error: mnist:") and "\n" not in line
    assert f"{tmp_path / 'none' / 'MNIST' / 'raw'}" in line and "train-images-idx3-ubyte" in line
    assert "t10k-labels-idx1-ubyte" in line and "data.download=true" in line


# --------------------------------------------------------------------------- CIFAR-10


def _cifar(root: Path, n_per_batch: int = 4) -> dict:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(2)
    batches = {}
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        with (base / name).open("wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels, "data": data}, fh)
        batches[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with (base / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch, "num_vis": 3072}, fh)
    return batches


def test_cifar10_reads_the_python_batches_through_torchvision(tmp_path, monkeypatch):
    import os

    import torchvision.datasets.cifar as tv_cifar

    batches = _cifar(tmp_path / "c")
    cfg = _cfg(source="cifar10", path=str(tmp_path / "c"), download=False)
    # The real files are checked against their official MD5 before torchvision unpickles them:
    # these generated ones are refused ...
    with pytest.raises(DataError, match="not found or corrupted.*cifar-10-python.tar.gz"):
        load_dataset(cfg.data)
    # ... and read by the same torchvision code once the MD5 check is bypassed for the test.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    ds = load_dataset(cfg.data)
    assert ds.X.shape == (24, 3, 32, 32) and ds.class_names[0] == "airplane"
    data, labels = batches["data_batch_2"]
    np.testing.assert_allclose(ds.X[5], data[1].reshape(3, 32, 32) / 255, atol=1e-6)
    assert ds.y[5] == labels[1]
    assert ds.official_test.tolist() == [False] * 20 + [True] * 4
