"""``methodo predict RUN_DIR INPUT [--out FILE]``: one row of predictions per input, streamed.

The input is read in chunks (a CSV in blocks of rows by Arrow, images a few hundred at a time), each
chunk preprocessed, scored and written before the next is read, so memory stays bounded whatever the
input's size. The output is a CSV: the input's identifier (``row``: the file line, line 1 being the
header, as error messages name rows; ``path`` for an image; ``line`` for text), then ``predicted``
and the task's scores (``p_CLASS`` per class or label). With ``--out`` the file appears only once
complete (written under a temporary name, then renamed): an input that turns out bad half-way leaves
nothing behind. Without ``--out`` the CSV goes to stdout.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from methodo.errors import BadInput


@dataclass
class PredictResult:
    rows: int
    out: Path | None
    task: str
    columns: list[str]


def output_table(predictor, chunk, scores: np.ndarray):
    """The output rows of one chunk as a ``pyarrow.Table`` (float32 scores, written in their shortest form)."""
    import pyarrow as pa

    s = predictor.schema
    id_name = {"tabular": "row", "image": "path", "text": "line"}[s.kind]
    ids = chunk.ids if s.kind != "text" else np.arange(1, len(scores) + 1) + 0
    cols: dict = {id_name: pa.array(ids.tolist() if ids.dtype == object else ids)}
    spec = predictor.spec
    if s.kind == "text" and not spec.has_classes:
        vocab = np.asarray(s.vocab, dtype=object)
        best = scores.argmax(1)
        cols["predicted"] = pa.array(vocab[best].tolist(), pa.string())
        cols["p_predicted"] = pa.array(scores[np.arange(len(best)), best].astype(np.float32))
    elif spec.has_classes:
        names = s.classes
        cols["predicted"] = pa.DictionaryArray.from_arrays(pa.array(scores.argmax(1).astype(np.int32)),
                                                           pa.array(names, pa.string()))
        for j, c in enumerate(names):
            cols[f"p_{c}"] = pa.array(scores[:, j].astype(np.float32))
    elif s.task == "multilabel":
        on = scores >= 0.5
        cols["predicted"] = pa.array(["|".join(n for n, v in zip(s.classes, row) if v) for row in on], pa.string())
        for j, c in enumerate(s.classes):
            cols[f"p_{c}"] = pa.array(scores[:, j].astype(np.float32))
    elif spec.pixel_classes:  # segmentation: the share of the image's pixels predicted as each class
        mask = scores.argmax(1).reshape(len(scores), -1)
        for j, c in enumerate(s.classes):
            cols[f"share_{c}"] = pa.array((mask == j).mean(1).astype(np.float32))
    else:
        cols["predicted"] = pa.array(np.asarray(scores, dtype=np.float32).ravel())
    return pa.table(cols)


def predict_command(run_dir: str | Path, inputs: list[str], *, out: str | None = None,
                    progress: bool = True) -> PredictResult:
    """Predict every input of ``inputs`` with the model of ``run_dir``; see the module docstring."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from methodo.progress import live
    from methodo.use.predictor import load

    predictor = load(run_dir)
    kind = predictor.kind
    if kind == "series":
        raise BadInput(f"predict: the forecasting model of {run_dir} is not read by `methodo predict` yet; in Python, "
                       "methodo.load(RUN_DIR).predict(windows) takes windows (rows, steps, variables) in data units")
    if kind == "graph":
        raise BadInput(f"predict: the model of {run_dir} reads graphs, and predict has no graph file format yet; "
                       "use methodo.use.predictor.load(RUN_DIR).predict(X) on packed graphs (methodo.data.graphs)")
    if kind == "tabular" and len(inputs) != 1:
        raise BadInput(f"predict: a table model reads one CSV file (got {len(inputs)} inputs)")
    if kind == "text" and len(inputs) != 1:
        raise BadInput(f"predict: a text model reads one text file (got {len(inputs)} inputs)")
    source = Path(inputs[0]) if kind == "text" else inputs[0] if kind == "tabular" else inputs
    if kind == "tabular" and Path(inputs[0]).is_dir():
        raise BadInput(f"predict: {inputs[0]} is a folder; the model of {run_dir} reads a CSV file")
    path = Path(out) if out else None
    if path is not None:
        if path.exists() and path.is_dir():
            raise BadInput(f"--out {out}: is a folder; give a file name, e.g. predictions.csv")
        if not path.parent.exists():
            raise BadInput(f"--out {out}: folder {path.parent} does not exist")
        if path.exists():
            raise BadInput(f"--out {out}: already exists; methodo never writes over your files (choose another name)")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp") if path else None
    from tqdm.auto import tqdm

    bar = tqdm(desc="predicting", unit=" rows", disable=not live(progress), leave=False, dynamic_ncols=True)
    writer, n, columns = None, 0, []
    sink = pa.OSFile(str(tmp), "wb") if tmp else None
    try:
        for chunk in predictor.chunks(source):
            table = output_table(predictor, chunk, predictor.scores_of(chunk))
            if sink is None:  # stdout: each block as text, the header once (stdout may be any text stream)
                buf = pa.BufferOutputStream()
                pacsv.write_csv(table, buf, pacsv.WriteOptions(include_header=not n, batch_size=1 << 16))
                sys.stdout.write(buf.getvalue().to_pybytes().decode("utf-8"))
            else:
                if writer is None:
                    writer = pacsv.CSVWriter(sink, table.schema, write_options=pacsv.WriteOptions(batch_size=1 << 16))
                writer.write_table(table)
            columns = columns or table.column_names
            n += table.num_rows
            bar.update(table.num_rows)
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
            os.replace(tmp, path)
        else:
            sys.stdout.flush()
    finally:
        bar.close()
        if tmp:
            if not sink.closed:
                sink.close()
            tmp.unlink(missing_ok=True)
    return PredictResult(n, path, predictor.task, columns)
