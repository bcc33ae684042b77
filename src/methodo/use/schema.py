"""What a trained model takes as input and gives as output: ``inputs.json`` in the run dir.

``methodo run`` writes it (stage 3, with the other inputs of the run) from what the data stage saw:
the feature columns of a table (numeric and categorical, in the order the fitted feature pipeline
reads them), the target and ignored columns, the image channels and size (and whether the run resized
or converted images), the classes, and the model to build (name, options, input shape, outputs).
``methodo predict``, ``methodo evaluate``, ``methodo export`` and ``methodo.load`` read it back,
validated like ``summary.json``: a run dir is hostile input, so a tampered file is one ``error:`` line
naming its key.

Run dirs written before this file existed: :func:`schema_from_record` rebuilds the schema from
``summary.json`` and ``config.yaml`` where they say enough (images; tables without categorical
columns or feature steps), and otherwise says that the run must be re-run.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from methodo.errors import BadInput

FORMAT = 1


class ModelSpec(BaseModel):
    """How to rebuild the network: ``build_model(name, input_shape=..., n_outputs=..., kind=..., **options)``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[int]
    n_outputs: int = Field(ge=1)


class InputSchema(BaseModel):
    """The contract of a trained model's inputs and outputs (``inputs.json``)."""

    model_config = ConfigDict(extra="forbid")
    format: int = FORMAT
    task: str
    kind: Literal["tabular", "image", "text",
                  "series",  # forecasting: columns are the series' variables, seq_len the window
                  "graph",  # packed graphs: the model's input_shape says it all
                  ]
    # tables: the raw columns, numeric then categorical, in the order the feature pipeline reads them
    columns: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    target: str | None = None  # the label column of a labeled CSV (evaluate); optional and ignored by predict
    ignore: list[str] = Field(default_factory=list)  # columns that are not features (ids, the group column)
    imputes: bool = False  # a feature step fills missing values: a missing cell is not an error
    # images: what the model reads, and what the run's loader did to get there
    channels: int | None = None
    image_size: list[int] | None = None  # [height, width]
    resize: bool = False  # data.image_size was set: other sizes are resized, as in training
    to_gray: bool = False  # data.channels was 1: color images are converted, as in training
    # text (character language models): the token of each id, and the window the model was trained on
    vocab: list[str] | None = None
    seq_len: int | None = None
    classes: list[str] | None = None  # class names (classification) or label names (multilabel)
    model: ModelSpec
    eval_batch_size: int = Field(1024, ge=1)

    @property
    def n_classes(self) -> int:
        return len(self.classes or [])

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)

    @classmethod
    def parse(cls, data: Any, *, source: str) -> "InputSchema":
        if not isinstance(data, dict):
            raise BadInput(f"{source}: the input schema must be a JSON object (got {type(data).__name__})")
        try:
            schema = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise BadInput(f"{source}: {key}: {msg}") from None
        from methodo.tasks import TASKS

        if schema.task not in TASKS:
            raise BadInput(f"{source}: task: unknown task {schema.task!r}")
        if schema.kind == "image" and (schema.channels not in (1, 3) or not schema.image_size
                                       or len(schema.image_size) != 2):
            raise BadInput(f"{source}: an image model needs channels (1 or 3) and image_size [height, width]")
        return schema


def schema_for_run(prep) -> InputSchema:
    """The schema of a run about to train (:class:`methodo.stages.Prepared`)."""
    from methodo.data.features import parse_step

    cfg, ds, data = prep.cfg, prep.ds, prep.data
    d = cfg.data
    kind = ds.kind
    common = dict(task=ds.task, kind=kind, classes=ds.class_names,
                  model=ModelSpec(name=cfg.model.name, options=dict(cfg.model.options),
                                  input_shape=list(data.input_shape), n_outputs=int(data.n_outputs)),
                  eval_batch_size=cfg.train.eval_batch_size)
    if kind == "tabular":
        group = d.split.group if d.split.method == "group" and d.split.group else None
        return InputSchema(**common, columns=list(ds.feature_names), categorical=list(ds.cat_names),
                           target=d.target or "target", ignore=[*d.ignore, *([group] if group else [])],
                           imputes=any(parse_step(s, i)[0] == "impute" for i, s in enumerate(d.features)))
    if kind == "image":
        return InputSchema(**common, channels=int(ds.X.shape[1]), image_size=[int(ds.X.shape[2]), int(ds.X.shape[3])],
                           resize=d.image_size is not None, to_gray=str(d.channels) == "1")
    if kind == "series":
        return InputSchema(**common, columns=list(ds.feature_names), target=d.target, seq_len=int(ds.X.shape[1]))
    if kind == "graph":  # packed graphs (methodo.data.graphs): the model's input_shape says it all
        return InputSchema(**common)
    return InputSchema(**common, vocab=list(ds.vocab or []), seq_len=int(ds.X.shape[1]))


def schema_from_record(rd, cfg) -> InputSchema:
    """The schema of a run dir written before ``inputs.json`` existed, from its summary and config."""
    from methodo.rundir import LAYOUT

    why = (f"{rd.path}: has no {LAYOUT['inputs']} (written by methodo run since issue 14), and its "
           "summary does not say enough to rebuild it")
    if not rd.has(LAYOUT["summary"]):
        raise BadInput(f"{why}; re-run it with `methodo run {rd.file(LAYOUT['config'])}`")
    record = rd.read_record()
    info = record.data
    if info is None or record.task is None:
        raise BadInput(f"{why} (the run did not get past its data stage)")
    from methodo.tasks import task_spec

    n_out = max(len(info.classes or []), 1) if task_spec(record.task).has_classes or info.classes else 1
    common = dict(task=record.task, kind=info.kind, classes=info.classes,
                  eval_batch_size=cfg.train.eval_batch_size)
    if info.kind == "image" and len(info.input_shape) == 3:
        c, h, w = info.input_shape
        return InputSchema(**common, channels=c, image_size=[h, w], resize=cfg.data.image_size is not None,
                           to_gray=str(cfg.data.channels) == "1",
                           model=ModelSpec(name=cfg.model.name, options=dict(cfg.model.options),
                                           input_shape=list(info.input_shape), n_outputs=n_out))
    feats = info.features or {}
    if info.kind == "tabular" and not cfg.data.features and not cfg.data.categorical and feats.get("names"):
        names = [str(n) for n in feats["names"]]
        return InputSchema(**common, columns=names, target=cfg.data.target or "target", ignore=list(cfg.data.ignore),
                           model=ModelSpec(name=cfg.model.name, options=dict(cfg.model.options),
                                           input_shape=[len(names)], n_outputs=n_out))
    raise BadInput(f"{why}; re-run it with `methodo run {rd.file(LAYOUT['config'])}`")
