"""A trained model with its own preprocessing: :func:`methodo.load` returns a :class:`Predictor`.

The predictor applies exactly what the run fitted on its training split — the feature pipeline
(``features.skops``, loaded with every type checked against an allow-list), the scaling
(``preprocessor.json``) — to raw inputs, then the best weights (``checkpoints/best.safetensors``), in
batches without gradients, as ``methodo run`` scored its validation and test splits. Everything it
reads from the run dir goes through :class:`~methodo.rundir.RunDir` (path guards, size limits) and is
validated first: a run dir is hostile input.

Examples
--------
>>> import methodo                                          # doctest: +SKIP
>>> model = methodo.load("runs/iris")                       # doctest: +SKIP
>>> model.predict(df)[:3]                                   # doctest: +SKIP
array(['setosa', 'versicolor', 'virginica'], dtype=object)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from methodo.errors import BadInput, DataError
from methodo.rundir import LAYOUT, RunDir
from methodo.use.inputs import Chunk

WEIGHTS = ("checkpoints/best.safetensors", "model.safetensors")  # a run dir's best weights; an exported package's


class Predictor:
    """A trained model and the preprocessing of its run (sklearn-like: ``predict``, ``predict_proba``,
    ``evaluate``). Build one with :func:`methodo.load` (:meth:`from_dir`)."""

    def __init__(self, schema, model, preprocessor, pipeline=None, *, path: Path | None = None,
                 record=None, device: str = "cpu"):
        self.schema, self.model, self.preprocessor, self.pipeline = schema, model, preprocessor, pipeline
        self.path, self.record, self.device = path, record, device

    def __repr__(self) -> str:
        return (f"Predictor({self.schema.model.name!r}, task={self.task!r}, kind={self.kind!r}"
                + (f", path={str(self.path)!r})" if self.path else ")"))

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dir(cls, path: str | Path, *, device: str = "cpu") -> "Predictor":
        """Load the model of a run dir (or of a folder written by ``methodo export --format safetensors``)."""
        from methodo.data.preprocess import Preprocessor
        from methodo.use.schema import InputSchema

        path = Path(path)
        if not path.is_dir():
            raise BadInput(f"{path}: not a run dir (no such folder)")
        rd = RunDir(path)
        if rd.has(LAYOUT["summary"]) and rd.has(LAYOUT["config"]):
            record = rd.read_record()
            if record.kfold is not None:
                raise BadInput(f"{path}: a k-fold run has one model per fold; load one of them: {path}/folds/fold-1")
        else:
            record = None
        if rd.has(LAYOUT["inputs"]):
            schema = InputSchema.parse(rd.read_json(LAYOUT["inputs"]), source=str(rd.file(LAYOUT["inputs"])))
        elif rd.has(LAYOUT["config"]):
            from methodo.config import load_config
            from methodo.use.schema import schema_from_record

            schema = schema_from_record(rd, load_config(rd.file(LAYOUT["config"])))
        else:
            raise BadInput(f"{path}: not a run dir (no {LAYOUT['inputs']} nor {LAYOUT['config']})")
        weights = next((w for w in WEIGHTS if rd.has(w)), None)
        if weights is None:
            raise BadInput(f"{path}: no {WEIGHTS[0]} (did the run finish? a run that stopped before its first epoch "
                           "has no weights)")
        if not rd.has(LAYOUT["preprocessor"]):
            raise BadInput(f"{path}: no {LAYOUT['preprocessor']} (the scaling fitted on the training split)")
        try:
            pre = Preprocessor.from_json(rd.read_text(LAYOUT["preprocessor"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"{rd.file(LAYOUT['preprocessor'])}: not a valid preprocessor file ({exc})") from None
        pipeline = None
        if rd.has(LAYOUT["features"]):
            from methodo.data.features import load_pipeline

            pipeline = load_pipeline(rd.file(LAYOUT["features"]))
        model = build(schema, rd.file(weights))
        return cls(schema, model.to(device), pre, pipeline, path=path, record=record, device=device)

    # ------------------------------------------------------------------ what it is

    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def kind(self) -> str:
        return self.schema.kind

    @property
    def classes_(self) -> np.ndarray | None:
        return None if self.schema.classes is None else np.asarray(self.schema.classes, dtype=object)

    @property
    def spec(self):
        from methodo.tasks import task_spec

        return task_spec(self.task)

    # ------------------------------------------------------------------ inputs → scores

    def chunks(self, X, *, labels: bool = False) -> Iterator[Chunk]:
        """``X`` as checked chunks of raw inputs: a CSV path (streamed), a DataFrame, a 2-D array (tables);
        image paths, a folder, or an ``(n, C, H, W)`` array in [0, 1] (images); strings (text)."""
        from methodo.use import inputs

        s = self.schema
        if s.kind == "tabular":
            if isinstance(X, (str, Path)):
                yield from inputs.iter_csv(X, s, labels=labels)
            elif hasattr(X, "columns") and hasattr(X, "iloc"):
                yield inputs.frame_chunk(X, s)
            else:
                yield inputs.array_chunk(X, s)
            return
        if s.kind == "image":
            if isinstance(X, np.ndarray) or hasattr(X, "numpy"):
                arr = np.asarray(X, dtype=np.float32)
                want = (s.channels, *s.image_size)
                if arr.ndim == 3:
                    arr = arr[None]
                if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
                    raise DataError(f"input: an array of shape {tuple(arr.shape)}; the model takes images of shape "
                                    f"(n, {', '.join(map(str, want))}), values in [0, 1]")
                yield Chunk(arr, None, np.arange(len(arr)))
                return
            items = [X] if isinstance(X, (str, Path)) else list(X)
            yield from inputs.iter_images(inputs.image_files(items), s)
            return
        if s.kind == "graph":  # packed graphs (methodo.data.graphs) of the model's shape
            arr = np.asarray(X, dtype=np.float32)
            if arr.ndim != 3 or list(arr.shape[1:]) != list(s.model.input_shape):
                raise DataError(f"input: an array of shape {tuple(arr.shape)}; the model takes packed graphs of "
                                f"shape (n, {', '.join(map(str, s.model.input_shape))})")
            yield Chunk(arr, None, np.arange(len(arr)))
            return
        lines = inputs.text_lines(Path(X)) if isinstance(X, Path) else [X] if isinstance(X, str) else list(X)
        yield Chunk(np.asarray(lines, dtype=object), None, np.arange(len(lines)))

    def model_input(self, chunk: Chunk):
        """The model's input tensor for a chunk of raw rows: feature pipeline, then scaling."""
        import torch

        X = chunk.num
        if self.kind == "text":
            return self._tokens(chunk.num)
        if self.pipeline is not None:
            Xin = X if chunk.cat is None else np.concatenate([X.astype(object), chunk.cat], axis=1)
            try:
                X = np.asarray(self.pipeline.transform(Xin), dtype=np.float32)
            except (ValueError, TypeError) as exc:
                raise DataError(f"input: the run's feature pipeline refused the rows ({' '.join(str(exc).split())})") \
                    from None
        return torch.from_numpy(np.ascontiguousarray(self.preprocessor.transform_x(X)))

    def _tokens(self, lines):
        """Text lines → token windows of the model's length (the last ``seq_len`` characters, left-padded
        with newlines), as in training; for a text classifier, the ids and mask of its own tokenizer (an
        ``hf:`` model's, or the one its registry entry names) cut or padded to its ``max_length``."""
        import torch

        from methodo.data.text import encode

        if self.spec.has_classes:
            from methodo.models import MODELS
            from methodo.models.backbones import resolve_hf, tokenize

            name = self.schema.model.name
            ref = name.partition(":")[2] if name.startswith("hf:") else MODELS.entry(name).meta.get("tokenizer")
            return torch.from_numpy(tokenize([str(t) for t in lines], resolve_hf(ref),
                                             int(self.schema.model.input_shape[-1])))

        T = self.schema.seq_len or 1
        out = np.zeros((len(lines), T), dtype=np.int64)  # id 0 is "\n"
        for i, line in enumerate(lines):
            ids = encode(str(line))[-T:]
            out[i, T - len(ids):] = ids
        return torch.from_numpy(out)

    def scores_of(self, chunk: Chunk) -> np.ndarray:
        """The task's scores of a chunk (probabilities, values in target units, ...)."""
        from methodo.evaluate import predict

        X = self.model_input(chunk)
        if self.kind == "text" and not self.spec.has_classes:  # next-character probabilities after each line
            import torch

            with torch.no_grad():
                self.model.eval()
                out = torch.cat([self.model(X[s:s + self.schema.eval_batch_size].to(self.device))[:, -1].float()
                                 .softmax(-1).cpu() for s in range(0, len(X), self.schema.eval_batch_size)])
            return out.numpy()
        return predict(self.model, X, task=self.task, batch_size=self.schema.eval_batch_size,
                       inverse_y=self.preprocessor.inverse_y)

    def scores(self, X) -> np.ndarray:
        parts = [self.scores_of(c) for c in self.chunks(X)]
        return np.concatenate(parts) if parts else np.zeros((0,))

    # ------------------------------------------------------------------ the sklearn-like API

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, classes)`` (classification), label probabilities ``(n, labels)``
        (multilabel), next-character probabilities ``(n, vocabulary)`` (text)."""
        if not (self.spec.has_classes or self.task == "multilabel" or self.kind == "text"):
            raise BadInput(f"predict_proba: a {self.task} model predicts values, not probabilities; use predict")
        return self.scores(X)

    def predict(self, X) -> np.ndarray:
        """One prediction per input: the class name (classification), the value (regression), a 0/1 row per
        label (multilabel), the most likely next character (text), the next horizon values (forecasting)."""
        return self.decide(self.scores(X))

    def decide(self, scores: np.ndarray) -> np.ndarray:
        if self.kind == "text" and not self.spec.has_classes:
            vocab = np.asarray(self.schema.vocab, dtype=object)
            return vocab[scores.argmax(1)]
        if self.spec.has_classes:
            return self.classes_[scores.argmax(1)]
        if self.task == "multilabel" or self.spec.pixel_classes:  # 0/1 per label; a class per pixel
            return np.asarray(self.spec.decide(scores))
        return scores

    def labels(self, y, source: str = "labels") -> np.ndarray:
        """Labels as the metrics take them: class indices (from class names, or indices), 0/1 rows, values."""
        y = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
        if self.spec.has_classes:
            return class_indices(y, self.schema.classes, source)
        if self.task == "multilabel":
            return np.asarray(y, dtype=np.float32)
        try:
            vals = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{source}: a {self.task} model needs numbers as labels") from None
        if not np.isfinite(vals).all():
            i = int(np.flatnonzero(~np.isfinite(vals))[0])
            raise DataError(f"{source}: label {i} is missing or not a finite number")
        return vals.astype(np.float32)

    def evaluate(self, X, y=None) -> dict[str, float | None]:
        """The run's metrics on labeled data ``(X, y)`` (``y`` may be left out when ``X`` is a CSV holding
        the target column). For intervals, baselines and drift, use ``methodo evaluate`` or
        :func:`methodo.use.evaluate.evaluate_run`."""
        from methodo.evaluate import compute_metrics

        scores, ys = [], []
        for c in self.chunks(X, labels=y is None):
            scores.append(self.scores_of(c))
            if y is None:
                ys.append(self.labels(c.y, source=str(X)))
        s = np.concatenate(scores)
        yy = np.concatenate(ys) if y is None else self.labels(y)
        if len(yy) != len(s):
            raise DataError(f"labels: {len(yy)} labels for {len(s)} inputs")
        return compute_metrics(self.task, self.spec.metric_input(s), yy, self.schema.n_classes)


def class_indices(y: np.ndarray, classes: list[str], source: str) -> np.ndarray:
    """Class labels → indices: by name (numbers written as the run names them, ``1`` or ``2.5``), else
    integer indices when no value is a name."""
    index = {c: i for i, c in enumerate(classes)}

    def name(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            return f"{float(v):g}"
        return str(v)

    names = [name(v) for v in np.asarray(y, dtype=object).ravel()]
    if all(n in index for n in names):
        return np.fromiter((index[n] for n in names), dtype=np.int64, count=len(names))
    ints = [n for n in names if n is not None and re.fullmatch(r"-?\d+", n)]
    if len(ints) == len(names) and not any(n in index for n in names) and all(0 <= int(n) < len(classes) for n in ints):
        return np.asarray([int(n) for n in ints], dtype=np.int64)
    i = next(i for i, n in enumerate(names) if n not in index)
    from methodo.errors import choices, short

    if names[i] is None:
        raise DataError(f"{source}: label {i + 1} is missing")
    raise DataError(f"{source}: label {short(names[i])} (label {i + 1}) is not a class of the model; its classes: "
                    f"{choices(classes)}")



def build(schema, weights_path: Path):
    """The network of ``schema`` with the weights of ``weights_path`` (names and shapes checked)."""
    from methodo.models import build_model
    from methodo.train.checkpoint import load_checkpoint, misfit

    from methodo.errors import ConfigError

    m = schema.model
    try:
        model = build_model(m.name, input_shape=tuple(m.input_shape), n_outputs=m.n_outputs, kind=schema.kind,
                            **m.options)
    except ConfigError as exc:
        raise BadInput(f"{weights_path.parent}: the model of the run cannot be built ({exc})") from None
    weights = load_checkpoint(weights_path)[0]
    bad = misfit(weights, model.state_dict())
    if bad is not None and bad[0] == "extra":
        raise BadInput(f"{weights_path}: has weights the run's model {m.name!r} does not ({bad[1]})")
    if bad is not None:
        raise BadInput(f"{weights_path}: does not fit the run's model {m.name!r} ({bad[1]})")
    model.load_state_dict(weights)
    return model.eval()


def load(run_dir: str | Path, *, device: str = "cpu") -> Predictor:
    """The trained model of ``run_dir`` with its preprocessing (:class:`Predictor`)."""
    return Predictor.from_dir(run_dir, device=device)

