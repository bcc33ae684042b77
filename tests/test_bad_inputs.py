"""The bad-input matrix: every case exits 2 with one `error:` line that names the problem (and the
allowed choices where there are some), no traceback, and no run recorded as finished."""

from __future__ import annotations

from pathlib import Path

import pytest

from methodo.cli import main


GOOD = """\
name: t
data:
  source: iris
model:
  name: mlp
train:
  epochs: 2
  progress: false
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
track:
  mlflow: false
"""


def _csv(tmp: Path, text: str) -> str:
    (tmp / "d.csv").write_text(text)
    return f"name: t\ndata: {{source: csv, path: {tmp / 'd.csv'}, target: y}}\nmodel: {{name: mlp}}\n" \
           "train: {epochs: 2, progress: false}\ntrack: {mlflow: false}\n"


def _images(tmp: Path, spoil=None) -> str:
    """A real PNG image folder (2 classes × 12 gray 8×8 images); ``spoil(folder)`` then breaks it."""
    import numpy as np
    from PIL import Image

    root = tmp / "imgs"
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(root / c / f"{i}.png")
    if spoil:
        spoil(root)
    return f"name: t\ndata: {{source: imagefolder, path: {root}}}\nmodel: {{name: cnn}}\n" \
           "train: {epochs: 2, progress: false}\ntrack: {mlflow: false}\n"


def _png(path: Path, w: int, h: int, *, data: bool = True) -> None:
    """A valid grayscale PNG of w×h black pixels written row by row (a decompression bomb: a few hundred
    KB on disk, w·h bytes once decoded), or with ``data=False`` its header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    idat = b""
    if data:
        z = zlib.compressobj(9)
        row = b"\0" * (w + 1)  # filter byte + pixels
        idat = chunk(b"IDAT", b"".join(z.compress(row) for _ in range(h)) + z.flush())
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)) + idat
                     + chunk(b"IEND", b""))


def _one_class_folder(tmp: Path) -> str:
    import shutil

    text = _images(tmp)
    shutil.rmtree(tmp / "imgs" / "b")
    return text


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:60])


def _bigger(p: Path) -> None:
    from PIL import Image

    Image.new("L", (12, 10), 128).save(p)


ROWS = "\n".join(f"{i},{i % 3}" for i in range(60))


def _bomb(levels: int, width: int = 9) -> str:
    """A YAML alias bomb: ``width**levels`` values from ``levels`` short lines."""
    parts = ["&a0 [" + ", ".join(["x"] * width) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


BIG_BOMB = _bomb(7)  # 9**7 = 4.8 M values after expansion

# (case id, config text or callable(tmp) -> text, extra CLI args, substrings the error must contain)
CASES = [
    # --- config
    ("unknown key", GOOD.replace("epochs: 2", "epoch: 2"), [], ["train.epoch", "unknown key", "'epochs'"]),
    ("unknown top-level key", GOOD + "trian: {}\n", [], ["trian", "unknown key", "'train'"]),
    ("wrong type", GOOD.replace("epochs: 2", "epochs: two"), [], ["train.epochs", "valid integer", "'two'"]),
    ("negative lr", GOOD.replace("lr: 0.05", "lr: -0.1"), [], ["train.optimizer.lr", "greater than 0"]),
    ("epochs=0", GOOD, ["train.epochs=0"], ["train.epochs", "greater than or equal to 1"]),
    ("unknown model", GOOD.replace("name: mlp", "name: vgg"), [], ["model.name", "'vgg'", "'cnn'", "'resnet'"]),
    ("unknown optimizer", GOOD.replace("name: sgd", "name: adamx"), [], ["train.optimizer.name", "'adamax'"]),
    ("unknown scheduler", GOOD, ["train.scheduler=cosine_restart"], ["train.scheduler.name", "'onecycle'"]),
    ("unknown metric", GOOD, ["evaluate.metrics=[accuracy,acurracy]"], ["evaluate.metrics", "'acurracy'", "'f1'"]),
    ("metric of another task", GOOD, ["evaluate.metrics=[mae]"], ["evaluate.metrics", "not a classification metric"]),
    ("option of another optimizer", GOOD, ["train.optimizer.betas=[0.9,0.99]"], ["train.optimizer.betas", "'momentum'"]),
    ("option value torch refuses", GOOD, ["train.optimizer.momentum=-1"], ["train.optimizer.momentum", "Invalid momentum"]),
    ("rule needs its value", GOOD, ["evaluate.threshold.rule=target_recall"], ["evaluate.threshold.value", "needs a value"]),
    ("task contradicts the data", GOOD, ["task=regression"], ["task", "classification dataset"]),
    ("monitor not an epoch metric", GOOD, ["train.early_stopping.monitor=val_f2"], ["monitor", "'val_accuracy'"]),
    ("empty file", "", [], ["config file is empty"]),
    ("not a mapping", "- a\n", [], ["must be a mapping"]),
    ("python tag", GOOD + "seed: !!python/object/apply:os.system ['true']\n", [], ["line 12", "plain YAML"]),
    ("broken YAML", "name: [t\n", [], ["invalid YAML", "line"]),
    ("bad override syntax", GOOD, ["train.epochs"], ["expected key=value"]),
    ("run name escaping its dir", GOOD.replace("name: t", "name: ../../x"), [], ["name", "run dir"]),
    ("cuda without a GPU", GOOD, ["train.device=cuda"], ["train.device", "no CUDA device"]),
    # --- config: bounded documents (alias bombs, size, nesting) and never an unbounded value in a message
    ("alias bomb under a typed key", GOOD + f"seed: {BIG_BOMB}\n", [], ["line 12", "expands to more than 100000 values"]),
    ("alias bomb under component options", GOOD.replace("name: mlp", f"name: mlp\n  hidden: {BIG_BOMB}"), [],
     ["line 6", "expands to more than 100000"]),
    ("alias bomb under data options", GOOD.replace("source: iris", f"source: iris\n  options: {{a: {BIG_BOMB}}}"),
     [], ["expands to more than 100000"]),
    ("alias bomb in an override", GOOD, [f"seed={BIG_BOMB}"], ["override 'seed=[", "expands to more than 100000"]),
    ("recursive alias", GOOD + "seed: &r [1, *r]\n", [], ["line 12", "recursive anchor"]),
    ("aliases under the limit: no huge message", GOOD + f"seed: {_bomb(4)}\n", [], ["seed", "(got a list of 4 items)"]),
    ("long string value", GOOD.replace("name: t", "name: " + "x" * 5000), [], ["name", "a str of 5000 characters"]),
    ("long key", GOOD + "k" * 1000 + ": 1\n", [], ["unknown key", "kkk..."]),
    ("huge integer", GOOD + "seed: " + "9" * 5000 + "\n", [], ["more than 4300 digits"]),
    ("config over 1 MB", GOOD + "# " + "x" * 1_100_000 + "\n", [], ["at most 1000000 bytes"]),
    ("nested too deeply", GOOD + "seed: " + "[" * 3000 + "]" * 3000 + "\n", [], ["nested too deeply"]),
    ("nested deeper than 50", GOOD + "seed: " + "[" * 60 + "]" * 60 + "\n", [], ["nested more than 50 levels"]),
    ("tagged value its constructor refuses", GOOD + "seed: !!int x\n", [], ["invalid YAML", "cannot be read"]),
    ("impossible date", GOOD + "seed: 2020-13-45\n", [], ["invalid YAML", "month must be in 1..12"]),
    ("control character", GOOD + "seed: \x01\n", [], ["invalid YAML", "#x0001"]),
    ("two documents", GOOD + "---\nseed: 1\n", [], ["invalid YAML", "single document"]),
    # --- config: not UTF-8 text, duplicate keys, overrides blamed for what they change
    ("UTF-16 config", GOOD.encode("utf-16"), [], ["UTF-16 text", "save it as UTF-8"]),
    ("UTF-16 config without BOM", GOOD.encode("utf-16-le"), [], ["not a text file", "NUL bytes"]),
    ("binary config", bytes(range(256)) * 8, [], ["not a text file"]),
    ("Latin-1 config", GOOD.replace("name: t", "name: café").encode("latin-1"), [], ["line 1", "not UTF-8", "0xe9"]),
    ("config that is a folder", lambda t: (t / "c.yaml").mkdir() or None, [], ["is a folder"]),
    ("duplicate top-level key", GOOD + "name: u\n", [], ["lines 1 and 12", "duplicate key 'name'"]),
    ("duplicate nested key", GOOD.replace("epochs: 2", "epochs: 2\n  epochs: 3"), [],
     ["lines 7 and 8", "duplicate key 'train.epochs'"]),
    ("duplicate key in a flow mapping", GOOD.replace("lr: 0.05", "lr: 0.05, lr: 0.1"), [],
     ["duplicate key 'train.optimizer.lr'"]),
    ("duplicate key in an override", GOOD, ["train.optimizer={name: sgd, name: adam}"],
     ["override 'train.optimizer=", "duplicate key 'name'"]),
    ("override breaking its parent's rule", GOOD.replace("source: iris", "source: iris\n  split: {val: 0.2}"),
     ["data.split.val=0.9"], ["override 'data.split.val=0.9'", "data.split:", "val + test"]),
    ("override making a file key wrong", GOOD, ["train.optimizer.name=adam"],
     ["line 9", "with override 'train.optimizer.name=adam'", "train.optimizer.momentum", "'betas'"]),
    ("override changing a union's type", GOOD, ["train.optimizer.lr=[1]"],
     ["override 'train.optimizer.lr=[1]'", "train.optimizer.lr: ", "valid number"]),
    ("override changing a mapping to a scalar", GOOD, ["train.optimizer=[adam]"],
     ["override 'train.optimizer=[adam]'", "train.optimizer"]),
    # --- model options checked by value (the model is built once on the meta device at config time)
    ("dropout out of range", GOOD, ["model.dropout=5"], ["model.dropout", "[0, 1)", "got 5"]),
    ("dropout of 1", GOOD, ["model.dropout=1"], ["model.dropout", "[0, 1)"]),
    ("negative width", GOOD, ["model=cnn", "model.width=-3"], ["model.width", "integer in [1, 1048576]", "got -3"]),
    ("fractional width", GOOD, ["model=resnet", "model.width=2.5"], ["model.width", "integer in [1,"]),
    ("zero blocks", GOOD, ["model=resnet", "model.blocks=0"], ["model.blocks", "integer in [1, 64]"]),
    ("a trillion blocks", GOOD, ["model=resnet", "model.blocks=1000000000000"], ["model.blocks", "integer in [1, 64]"]),
    ("hidden with a string", GOOD, ["model.hidden=[64,a]"], ["model.hidden", "layer widths", "[64, 'a']"]),
    ("hidden with a zero", GOOD, ["model.hidden=[0]"], ["model.hidden", "integer in [1,"]),
    ("hidden not a list", GOOD.replace("name: mlp", "name: mlp\n  hidden: 64"), [], ["line 6", "model.hidden", "tuple"]),
    ("model too large", GOOD, ["model.hidden=[1000000,1000000]"], ["model.hidden", "parameters", "limit"]),
    ("heads not dividing d_model", GOOD, ["task=language_modeling", "model=transformer", "model.heads=3"],
     ["model.heads", "multiple of heads=3"]),
    ("zero GRU layers", GOOD, ["task=language_modeling", "model=gru", "model.layers=0"], ["model.layers", "integer in [1, 64]"]),
    ("segmentation levels", GOOD, ["task=segmentation", "model=unet", "model.levels=0"], ["model.levels", "integer in [1, 64]"]),
    # --- component values found by tests/test_fuzz.py
    ("scheduler value that divides by zero", GOOD, ["train.scheduler={name: onecycle, div_factor: 0}"],
     ["train.scheduler.div_factor", "cannot be built", "division by zero"]),
    ("normalize with text", GOOD.replace("source: iris", "source: digits").replace("name: mlp", "name: cnn"),
     ["data.augment=[{normalize: {mean: [a], std: [1]}}]"], ["data.augment.0.mean", "one number per channel"]),
    ("normalize with a zero std", GOOD, ["data.augment=[{normalize: {mean: 0.5, std: 0}}]"],
     ["data.augment.0.std", "> 0"]),
    ("normalize with channels the images lack", GOOD.replace("source: iris", "source: digits"),
     ["data.augment=[{normalize: {mean: [0.5, 0.5], std: [1, 1]}}]"], ["normalize has 2 mean", "1 channel"]),
    ("feature function columns not a list", GOOD, ["data.features=[{function: {columns: 0}}]"],
     ["data.features.0", "columns is a list"]),
    ("selection of no feature", GOOD, ["data.features=[{mutual_info: {k: 0}}]"], ["data.features.0.k", ">= 1"]),
    ("l1 strength of zero", GOOD, ["data.features=[{l1: {C: 0}}]"], ["data.features.0.C", "> 0"]),
    ("selection leaving no feature", GOOD, ["data.features=[{variance_threshold: {threshold: 1000}}]"],
     ["0_variance_threshold", "failed on the training split", "No feature in X meets the variance threshold"]),
    # --- data
    ("missing CSV file", lambda t: _csv(t, "") .replace("d.csv", "nope.csv"), [], ["nope.csv", "not found"]),
    ("empty CSV", lambda t: _csv(t, ""), [], ["d.csv", "empty"]),
    ("header-only CSV", lambda t: _csv(t, "a,y\n"), [], ["d.csv", "no rows"]),
    ("a 100000-character target column", lambda t: _csv(t, "a,y\n1,2\n").replace("target: y", "target: " + "q" * 100_000),
     [], ["d.csv", "data.target column 'qqq", "(a str of 100000 characters) not found"]),
    ("missing target column", lambda t: _csv(t, "a,b\n1,2\n"), [], ["'y' not found", "'a' or 'b'"]),
    ("NaN label", lambda t: _csv(t, "a,y\n" + ROWS + "\n7,\n"), [], ["row 62", "missing value in target column 'y'"]),
    ("string in a numeric column", lambda t: _csv(t, "a,y\n" + ROWS + "\nseven,1\n"), [], ["row 62", "column 'a' is not numeric", "'seven'"]),
    ("missing feature value", lambda t: _csv(t, "a,b,y\n1,,0\n" + "\n".join(f"{i},{i},{i % 2}" for i in range(40))), [], ["column 'b', row 2", "missing values", "impute"]),
    ("no feature column", lambda t: _csv(t, "y\n1\n2\n"), [], ["no feature columns"]),
    ("class absent from a split", lambda t: _csv(t, "a,y\n" + ROWS + "\n99,7\n").replace("source: csv", "source: csv, split: {method: random}"), [], ["class '7'", "absent from the", "'stratified'"]),
    ("class too rare to stratify", lambda t: _csv(t, "a,y\n" + ROWS + "\n99,7\n"), [], ["data.split", "cannot split"]),
    ("fractions that do not sum", GOOD.replace("source: iris", "source: iris\n  split: {val: 0.6, test: 0.4}"), [], ["data.split", "val + test"]),
    ("corrupt image", lambda t: _images(t, lambda r: _truncate(r / "b" / "3.png")), [], ["b/3.png", "truncated"]),
    ("0-byte image", lambda t: _images(t, lambda r: (r / "a" / "5.png").write_bytes(b"")), [], ["a/5.png", "0-byte file"]),
    ("text named .png", lambda t: _images(t, lambda r: (r / "a" / "2.png").write_text("hello")), [], ["a/2.png", "not an image"]),
    ("mixed image sizes", lambda t: _images(t, lambda r: _bigger(r / "b" / "7.png")), [], ["different sizes", "b/7.png is 12×10", "data.image_size"]),
    ("wrong channels", _images, ["data.channels=4"], ["data.channels", "'1'", "'3'", "'auto'"]),
    # --- data the task cannot use: refused while loading, before anything is written
    ("one class in a CSV", lambda t: _csv(t, "a,y\n" + "\n".join(f"{i},1" for i in range(40))), [],
     ["d.csv", "only one class ('1', 40 rows)", "at least 2 classes"]),
    ("one text class in a CSV", lambda t: _csv(t, "a,y\n" + "\n".join(f"{i},cat" for i in range(40))), [],
     ["only one class ('cat'"]),
    ("one class left after a bad row", lambda t: _csv(t, "a,y\n" + "\n".join(f"{i},1" for i in range(40)) + "\n5,"),
     [], ["row 42", "missing value in target column 'y'"]),
    ("constant regression target", lambda t: _csv(t, "a,y\n" + "\n".join(f"{i},2.5" for i in range(40))), [],
     ["d.csv", "2.5 in every row", "nothing to predict"]),
    ("one class folder", _one_class_folder, [], ["imgs", "only one folder ('a', 12 images)"]),
    ("inf in a feature", lambda t: _csv(t, "a,y\n" + ROWS + "\ninf,1\n"), [], ["row 62", "column 'a'", "'inf'", "finite"]),
    ("-inf in a feature", lambda t: _csv(t, "a,b,y\n" + "\n".join(f"{i},-Infinity,{i % 2}" for i in range(30))), [],
     ["row 2", "column 'b'", "'-Infinity'", "finite"]),
    ("1e308 in a feature (beyond float32)", lambda t: _csv(t, "a,y\n" + ROWS + "\n1e308,1\n"), [],
     ["row 62", "'1e308'", "3.4e+38"]),
    ("overflowing number in a feature", lambda t: _csv(t, "a,y\n" + ROWS + "\n-1e400,1\n"), [], ["row 62", "'-1e400'"]),
    ("inf in a regression target", lambda t: _csv(t, "a,y\n" + "\n".join(f"{i},{i * 0.5}" for i in range(40))
                                                  + "\n3,inf\n"), [], ["row 42", "target column 'y'", "'inf'"]),
    ("empty class folder", lambda t: _images(t, lambda r: (r / "c").mkdir()), [], ["imgs/c", "holds no png/jpg/jpeg"]),
    ("class folder with no image", lambda t: _images(t, lambda r: (r / "c").mkdir() or (r / "c" / "x.txt").write_text("x")),
     [], ["imgs/c", "holds no"]),
    # --- decompression bombs: refused from the header, one line naming the file, its size and the limit
    ("decompression bomb", lambda t: _images(t, lambda r: _png(r / "a" / "big.png", 15000, 15000)), [],
     ["a/big.png", "15000×15000", "225.0 M pixels", "89.5 M pixels", "data.max_image_pixels"]),
    ("image over Pillow's warning size", lambda t: _images(t, lambda r: _png(r / "b" / "big.png", 9600, 9600, data=False)),
     [], ["b/big.png", "9600×9600", "data.max_image_pixels=92160000"]),
    ("decompression bomb with a size set", lambda t: _images(t, lambda r: _png(r / "a" / "big.png", 20000, 20000,
                                                                                data=False)),
     ["data.image_size=8"], ["a/big.png", "20000×20000"]),
    ("image over a lowered pixel limit", _images, ["data.max_image_pixels=32"], ["8×8 = 0.0 M pixels", "data.max_image_pixels"]),
    ("image size of 0", _images, ["data.image_size=0"], ["data.image_size", "size >= 1 or [height, width]"]),
    ("image size of 3 numbers", _images, ["data.image_size=[8,8,8]"], ["data.image_size", "[height, width]"]),
    ("image size too large for memory", _images, ["data.image_size=200000"], ["GiB of memory", "data.image_size"]),
    ("pixel limit of 0", GOOD, ["data.max_image_pixels=0"], ["data.max_image_pixels", "greater than or equal to 1"]),
    # --- runtime
    ("batch larger than the data", GOOD, ["train.batch_size=1000"], ["train.batch_size=1000", "at most"]),
]


@pytest.mark.parametrize("case,text,extra,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_matrix(tmp_path, capsys, case, text, extra, needles):
    cfg = tmp_path / "c.yaml"
    content = text(tmp_path) if callable(text) else text
    if isinstance(content, bytes):
        cfg.write_bytes(content)
    elif content is not None:
        cfg.write_text(content)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["run", str(cfg), *extra, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run dir, no mlflow.db


def test_matrix_has_at_least_30_cases():
    assert len(CASES) + len(RUNTIME) >= 30


def _file_parent(tmp):  # a "directory" that is a regular file: not even root can write there
    (tmp / "afile").write_text("x")
    return ["--out", str(tmp / "afile" / "run")], ["cannot write there"]


def _run_dir_reused(tmp):
    (tmp / "old").mkdir()
    (tmp / "old" / "summary.json").write_text("{}")
    return ["--out", str(tmp / "old")], ["already holds a run", "--resume"]


RUNTIME = [("unwritable output dir", _file_parent), ("output dir holding a run", _run_dir_reused)]


@pytest.mark.parametrize("case,make", RUNTIME, ids=[c[0] for c in RUNTIME])
def test_runtime_bad_inputs(tmp_path, capsys, case, make):
    (tmp_path / "c.yaml").write_text(GOOD)
    args, needles = make(tmp_path)
    code = main(["run", str(tmp_path / "c.yaml"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err
    for n in needles:
        assert n in err
    assert not (tmp_path / "mlflow.db").exists()


def test_argument_errors_are_one_line(capsys):
    for argv in (["run"], ["list", "everything"], ["frobnicate"], ["run", "--resume"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err, (argv, err)


def test_other_commands_on_bad_dirs(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run dir (no summary.json)" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a run dir (no config.yaml)" in capsys.readouterr().err
    (tmp_path / "summary.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


# --- the same data, audited: `data inspect` reports it (exit 0) with the right finding, and no false alarm
INSPECT = [
    ("one class", lambda t: _csv(t, "a,y\n" + "\n".join(f"{i},1" for i in range(40))), ["single_class"],
     ["target_leakage"]),
    ("constant target", lambda t: _csv(t, "a,y\n" + "\n".join(f"{i},2.5" for i in range(40))), ["constant_target"],
     ["target_leakage"]),
    ("one class folder", _one_class_folder, ["single_class"], []),
    ("inf and overflow", lambda t: _csv(t, "a,y\n" + ROWS + "\ninf,1\n1e308,2\n-1e400,0\n"),
     ["non_finite_value", "missing_values"], []),
    ("empty class folder", lambda t: _images(t, lambda r: (r / "c").mkdir()), ["empty_class"], []),
    ("decompression bomb", lambda t: _images(t, lambda r: _png(r / "a" / "big.png", 15000, 15000, data=False)),
     ["unreadable_file"], []),
    ("hidden folders", lambda t: _images(t, lambda r: [(r / d).mkdir() for d in ("__MACOSX", ".git")]), [],
     ["empty_class"]),
]


@pytest.mark.parametrize("case,make,expected,absent", INSPECT, ids=[c[0] for c in INSPECT])
def test_inspect_reports_unusable_data(tmp_path, capsys, case, make, expected, absent):
    import json

    from conftest import cli_inproc

    cfg = tmp_path / "c.yaml"
    cfg.write_text(make(tmp_path))
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = cli_inproc(capsys, "data", "inspect", str(cfg), "--json")
    assert code == 0 and not err.strip(), err
    ids = [f["id"] for f in json.loads(out)["findings"]]
    assert set(expected) <= set(ids) and not set(absent) & set(ids), ids
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_hidden_folders_and_files_are_not_classes(tmp_path):
    from methodo.config import load_config
    from methodo.data import load_dataset

    def spoil(r):
        for d in ("__MACOSX", ".git", "a/.thumbs", "__MACOSX/a"):
            (r / d).mkdir(parents=True, exist_ok=True)
        _png(r / "__MACOSX" / "a" / "0.png", 8, 8)
        _png(r / "a" / ".thumbs" / "0.png", 4, 4)
        (r / "b" / "._0.png").write_bytes(b"\x00\x05AppleDouble")

    (tmp_path / "c.yaml").write_text(_images(tmp_path, spoil))
    ds = load_dataset(load_config(tmp_path / "c.yaml").data)
    assert ds.class_names == ["a", "b"] and len(ds.y) == 24 and not ds.problems


def test_big_images_print_no_pillow_warning(tmp_path, capsys):
    """Between Pillow's warning size and its error size, Pillow warns on stderr: nothing but our line."""
    import warnings

    (tmp_path / "c.yaml").write_text(_images(tmp_path, lambda r: _png(r / "a" / "big.png", 9600, 9600, data=False)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
        code2 = main(["data", "inspect", str(tmp_path / "c.yaml")])
    assert code == 2 and code2 == 0 and not caught, [str(w.message) for w in caught]


def test_a_raised_pixel_limit_reads_the_big_image(tmp_path):
    from methodo.config import load_config
    from methodo.data import load_dataset

    (tmp_path / "c.yaml").write_text(_images(tmp_path, lambda r: _png(r / "a" / "big.png", 9600, 9600)))
    cfg = load_config(tmp_path / "c.yaml", ["data.max_image_pixels=100000000", "data.image_size=8"])
    ds = load_dataset(cfg.data)
    assert len(ds.y) == 25 and ds.X.shape[1:] == (1, 8, 8)


def test_absent_class_message_does_not_suggest_the_method_already_set():
    import numpy as np

    from methodo.config import DataConfig
    from methodo.data import prepare
    from methodo.data.sources import Dataset
    from methodo.errors import DataError

    y = np.array([0, 1] * 30 + [2])
    ds = Dataset("t", "classification", "tabular", np.random.default_rng(0).normal(size=(61, 2)).astype("float32"),
                 y, ["a", "b"], ["x", "y", "z"])
    for method, says in (("stratified", False), ("random", True)):
        cfg = DataConfig(source="iris", split={"method": method})
        idx = {"train": np.arange(0, 40), "val": np.arange(40, 50), "test": np.arange(50, 61)}
        with pytest.raises(DataError, match="class 'z'") as exc:
            prepare(ds, cfg, 0, indices=idx)
        assert ("'stratified'" in str(exc.value).split(");")[-1]) is says, str(exc.value)


def test_steps_that_keep_no_feature_are_one_line():
    """A step that keeps no column (scikit-learn only warns) is a DataError, and its warning is not printed."""
    import warnings

    import numpy as np
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from methodo.data.features import fit_transform
    from methodo.errors import DataError

    pipe = Pipeline([("drop", FunctionTransformer(lambda X: X[:, :0]))])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(DataError, match="no feature is left"):
        warnings.simplefilter("always")
        fit_transform(pipe, np.ones((10, 3)), np.arange(10) % 2)
    assert not caught


@pytest.mark.parametrize("case", ["alias bomb in an override", "UTF-16 config", "duplicate nested key",
                                  "dropout out of range", "one class in a CSV", "inf in a feature",
                                  "decompression bomb", "empty class folder"])
def test_bad_input_leaves_an_existing_run_dir_untouched(tmp_path, capsys, case):
    _, text, extra, _ = next(c for c in CASES if c[0] == case)
    content = text(tmp_path) if callable(text) else text
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content) if isinstance(content, bytes) else cfg.write_text(content)
    old = tmp_path / "old"
    (old / "checkpoints").mkdir(parents=True)
    for name, body in (("summary.json", '{"status": "finished"}'), ("config.yaml", GOOD), ("checkpoints/last.st", "w")):
        (old / name).write_text(body)
    before = {str(p.relative_to(old)): (p.stat().st_mtime_ns, p.read_bytes()) for p in old.rglob("*") if p.is_file()}
    code = main(["run", str(cfg), *extra, "--out", str(old)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    code = main(["data", "inspect", str(cfg), *extra])  # 0 (a finding) or 2, never a traceback
    err = capsys.readouterr().err
    assert code in (0, 2) and "Traceback" not in err
    after = {str(p.relative_to(old)): (p.stat().st_mtime_ns, p.read_bytes()) for p in old.rglob("*") if p.is_file()}
    assert after == before


def test_model_too_large_for_memory_is_refused_before_allocation(tmp_path, capsys, monkeypatch):
    """Sized on the meta device for the real input first: a model whose training state cannot fit is one
    line naming the model, not an allocator error (the config-time check only uses a small dummy input)."""
    import methodo.data.sources as sources

    monkeypatch.setattr(sources, "_available_memory", lambda: 2**30)  # 1 GiB
    (tmp_path / "c.yaml").write_text(GOOD)
    code = main(["run", str(tmp_path / "c.yaml"), "model.hidden=[20000,20000]", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: model.name: model 'mlp' has 4") and "\n" not in err, err
    assert "GiB available" in err and not (tmp_path / "r").exists()
