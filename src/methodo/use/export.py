"""``methodo export RUN_DIR --format onnx|torchscript|safetensors [--out DIR]``: a model usable without methodo.

- ``onnx``: ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch dimension (input ``input``,
  output ``output``), then **checked**: onnxruntime runs the exported file on the run's test inputs
  (rebuilt from its config with the saved transforms; random inputs of the right shape when the data is
  gone) and every output must equal PyTorch's within :data:`TOLERANCE`. The numbers go to ``check.json``.
  Needs the ``export`` extra (``pip install 'methodo[export]'``: onnx, onnxscript, onnxruntime).
- ``torchscript``: ``torch.jit.trace`` in eval mode, checked the same way against PyTorch.
- ``safetensors``: the weights alone, with ``inputs.json`` (architecture name, options, shapes): a
  folder :func:`methodo.load` and ``methodo predict`` read like a run dir.

Every format gets the preprocessing beside the model: ``preprocessing.json`` (columns, classes, image
channels and size, the scaling's mean and std, the target scaling, what the outputs are) — enough to
use the ONNX file from any language — plus ``features.skops`` for tables with feature steps, the
files :func:`methodo.load` reads (``inputs.json``, ``preprocessor.json``) and the run's ``MODEL_CARD.md``.
Nothing is written unless the export and its check succeed.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from methodo.errors import BadInput, RunFailed
from methodo.rundir import LAYOUT, RunDir

FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt", "safetensors": "model.safetensors"}
TOLERANCE = 1e-5  # largest absolute difference allowed between the exported model's outputs and PyTorch's
CHECK_ROWS = 256  # inputs the check runs at most
_OUTPUTS = {
    "classification": "logits per class; probabilities = softmax(output)",
    "multilabel": "logits per label; probabilities = sigmoid(output); a label applies when its probability >= 0.5",
    "regression": "the standardized value; value = output * y_std + y_mean",
    "segmentation": "logits per class and pixel (N, C, H, W); class = argmax over C",
    "language_modeling": "next-token logits per position (N, T, V); tokens are the characters of vocab",
}


def _needs_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise BadInput(f"export --format onnx needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
                       "pip install 'methodo[export]'") from None


def export_onnx(model, example, path: Path) -> None:
    """``model`` to ONNX at ``path`` with the dynamo exporter, batch dimension dynamic."""
    import warnings

    import torch

    _needs_onnx()
    model.eval()
    batch = torch.export.Dim("batch", min=1)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["input"],
                              output_names=["output"], dynamic_shapes=({0: batch},), verbose=False)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; the reason is what matters
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise BadInput(f"the model cannot be exported to ONNX ({reason}); use --format torchscript or safetensors") \
            from None
    data = path.with_name(path.name + ".data")
    if data.exists():  # the exporter puts larger weights in a side file: one self-contained file is simpler to ship
        import onnx

        proto = onnx.load(str(path))  # reads the side file
        if proto.ByteSize() < 2**31 - 2**20:  # protobuf's 2 GB limit; above it the side file stays
            onnx.save_model(proto, str(path))
            data.unlink()


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def export_torchscript(model, example, path: Path) -> None:
    import warnings

    import torch

    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (example,), check_trace=False)
            traced.save(str(path))
    except Exception as exc:  # noqa: BLE001
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise BadInput(f"the model cannot be exported to TorchScript ({reason}); use --format onnx or safetensors") \
            from None


def run_torchscript(path: Path, x):
    import warnings

    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path)).eval()(torch.as_tensor(x)).float().numpy()


def compare(model, exported_run, path: Path, X) -> dict:
    """Run the exported file and PyTorch on the same inputs: the largest absolute difference, and a check."""
    import torch

    with torch.no_grad():
        want = model.eval()(X).float().numpy()
    got = np.asarray(exported_run(path, X.numpy()))
    if got.shape != want.shape:
        raise RunFailed(f"the exported model's output has shape {got.shape}, PyTorch's {want.shape}")
    diff = float(np.max(np.abs(got - want))) if got.size else 0.0
    return {"rows": int(len(X)), "max_abs_diff": diff, "tolerance": TOLERANCE, "passed": bool(diff <= TOLERANCE)}


def check_inputs(predictor, rd: RunDir, *, seed: int = 0):
    """The model inputs of the run's test rows (rebuilt from its config with the saved transforms), or
    random inputs of the right shape when the run's data cannot be read. Returns ``(X, what)``."""
    import torch

    from methodo.use.inputs import Chunk

    s = predictor.schema
    try:
        from methodo.config import load_config
        from methodo.data import load_dataset, split_dataset

        cfg = load_config(rd.file(LAYOUT["config"]))
        ds = load_dataset(cfg.data)
        rows = split_dataset(ds, cfg.data, cfg.seed)["test"][:CHECK_ROWS]
        if s.kind == "text":
            return torch.from_numpy(np.ascontiguousarray(ds.X[rows])), f"{len(rows)} test rows of the run"
        chunk = Chunk(ds.X[rows], None if ds.cat is None else ds.cat[rows], rows)
        return predictor.model_input(chunk), f"{len(rows)} test rows of the run"
    except Exception:  # noqa: BLE001 - the data moved, or the run dir is an export: random inputs still check
        pass
    g = torch.Generator().manual_seed(seed)
    shape = (64, *s.model.input_shape)
    if s.kind == "text":
        return torch.randint(0, s.model.n_outputs, shape, generator=g), "64 random inputs (the run's data was not found)"
    x = torch.rand(shape, generator=g) if s.kind == "image" else torch.randn(shape, generator=g)
    if s.kind == "image":
        x = torch.from_numpy(predictor.preprocessor.transform_x(x.numpy()))
    return x, "64 random inputs (the run's data was not found)"


def preprocessing(predictor) -> dict:
    """``preprocessing.json``: how to turn raw inputs into the exported model's input, and its outputs back."""
    s, pre = predictor.schema, predictor.preprocessor
    out = {"task": s.task, "kind": s.kind, "input": "input", "output": "output",
           "input_shape": ["batch", *s.model.input_shape], "outputs": _OUTPUTS.get(s.task, ""),
           "classes": s.classes}
    if s.kind == "tabular":
        out["columns"] = s.columns
        out["categorical"] = s.categorical
        out["feature_pipeline"] = LAYOUT["features"] if predictor.pipeline is not None else None
        out["steps"] = (["features.skops (scikit-learn Pipeline, load with skops.io) on the columns in order, "
                         "numeric then categorical"] if predictor.pipeline is not None else []) + [
            "x = (x - mean) / std per feature (float32)"]
    elif s.kind == "image":
        out["channels"], out["image_size"] = s.channels, s.image_size
        out["steps"] = ["decode to " + ("grayscale" if s.channels == 1 else "RGB") + ", alpha composited on white",
                        f"resize to {s.image_size[1]}×{s.image_size[0]} (bilinear)"
                        + ("" if s.resize else " (the run did not resize: its inputs had this size)"),
            "x = pixels / 255 as float32, shape (N, C, H, W)", "x = (x - mean) / std per channel"]
    else:
        out["vocab"], out["seq_len"] = s.vocab, s.seq_len
        out["steps"] = ["characters to ids by vocab (tabs as 4 spaces, others <unk>)"]
    out["scaling"] = {"scale": pre.scale, "mean": None if pre.mean is None else pre.mean.ravel().tolist(),
                      "std": None if pre.std is None else pre.std.ravel().tolist(),
                      "shape": None if pre.mean is None else list(pre.mean.shape)}
    if predictor.spec.standardize_target:
        out["target"] = {"y_mean": pre.y_mean, "y_std": pre.y_std}
    return out


def export_run(run_dir: str | Path, fmt: str, *, out: str | Path | None = None) -> tuple[RunDir, dict]:
    """Export the model of ``run_dir`` as ``fmt`` into a new folder; returns it and the check's numbers."""
    from methodo.use.predictor import load

    if fmt not in FORMATS:
        raise BadInput(f"--format {fmt!r}: choose onnx, torchscript or safetensors")
    if fmt == "onnx":
        _needs_onnx()
    predictor = load(run_dir)
    rd_run = RunDir(run_dir)
    model = predictor.model.cpu().eval()
    check: dict = {"format": fmt}
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FORMATS[fmt]
        if fmt == "safetensors":
            from methodo.train.checkpoint import save_checkpoint

            save_checkpoint(path, model.state_dict(), meta={"model": predictor.schema.model.model_dump()})
        else:
            X, what = check_inputs(predictor, rd_run)
            example = X[:2] if len(X) >= 2 else X.repeat(2, *([1] * (X.ndim - 1)))
            if fmt == "onnx":
                export_onnx(model, example, path)
                check.update(compare(model, run_onnx, path, X), inputs=what, runtime="onnxruntime")
            else:
                export_torchscript(model, example, path)
                check.update(compare(model, run_torchscript, path, X), inputs=what, runtime="torch.jit")
            if not check["passed"]:
                raise RunFailed(f"the exported {fmt} model differs from PyTorch by {check['max_abs_diff']:.3g} on "
                                f"{what}, more than {TOLERANCE:g}; nothing was written")
        for f in sorted(Path(tmp).iterdir()):  # the model, and an ONNX side file of weights when there is one
            files[f.name] = f.read_bytes()
    files["preprocessing.json"] = json.dumps(preprocessing(predictor), indent=2).encode()
    files[LAYOUT["inputs"]] = predictor.schema.to_json().encode()
    files[LAYOUT["preprocessor"]] = predictor.preprocessor.to_json().encode()
    for name in (LAYOUT["features"], LAYOUT["card"]):
        if rd_run.has(name):
            files[name] = rd_run.read_bytes(name)
    if fmt != "safetensors":
        files["check.json"] = json.dumps(check, indent=2).encode()
    name = predictor.record.name if predictor.record is not None else Path(run_dir).name
    rd = RunDir.create(out, name=name or "model", kind=f"export-{fmt}", folders=())
    for fname, data in files.items():
        rd.write_bytes(fname, data)
    return rd, check
