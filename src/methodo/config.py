"""Typed, strict experiment configuration.

A config is YAML (read with ``yaml.safe_load`` only) plus dotted ``key=value`` overrides.
Every field carries its help text, so validation, ``methodo run --help`` and the docs come from
one source. Any problem is a :class:`~methodo.errors.ConfigError` whose one-line message names the
key, the YAML line when there is one, the bad value and what is allowed.

Examples
--------
>>> from methodo.config import load_config
>>> cfg = load_config("examples/digits.yaml", ["train.epochs=3"])   # doctest: +SKIP
>>> cfg.train.epochs                                                  # doctest: +SKIP
3
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from methodo.errors import ConfigError, choices

TASKS = ("classification", "regression", "segmentation", "language_modeling")


class _Strict(BaseModel):
    """Base: unknown keys are errors and values are not silently coerced (no "3" → 3)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class _Named(BaseModel):
    """A component chosen by ``name`` whose other keys are that component's own options.

    Options are checked against the component's signature by the stage that owns the registry,
    so ``train.optimizer.betas`` is accepted for ``adam`` and refused for ``sgd``. A key set to
    ``null`` is dropped, which lets an override unset an option (``train.optimizer.momentum=null``).
    """

    model_config = ConfigDict(extra="allow", strict=True)
    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v):
        if isinstance(v, str):  # `scheduler: onecycle` is short for `scheduler: {name: onecycle}`
            return {"name": v}
        if isinstance(v, dict):
            return {k: val for k, val in v.items() if val is not None or k == "name"}
        return v

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SplitConfig(_Strict):
    method: Literal["random", "stratified"] = Field(
        "stratified", description="How rows are assigned to train/val/test (seeded)."
    )
    val: float = Field(0.15, gt=0, lt=1, description="Fraction of rows for validation.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction of rows for the final test.")

    @model_validator(mode="after")
    def _fractions(self):
        if self.val + self.test >= 1:
            raise ValueError(
                f"val + test must leave rows for training (val={self.val} + test={self.test} >= 1)"
            )
        return self


class DataConfig(_Strict):
    source: str = Field(description="Dataset: a registry name (see `methodo list datasets`) or csv.")
    path: str | None = Field(None, description="File or folder for csv and downloaded datasets.")
    target: str | None = Field(None, description="Target column for csv.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")
    balance: Literal["none", "class_weights"] = Field(
        "none", description="Class balancing on the training split only."
    )
    augment: list[Any] = Field(default_factory=list, description="Training-only augmentations.")
    scale: Literal["standard", "none"] = Field(
        "standard", description="Feature scaling, fitted on the training split only."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the dataset's loader, e.g. shapes: {n: 600, size: 32}."
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, v):
        from methodo.data.sources import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; choose one of {choices(DATASETS.names())}")
        return v

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, v):
        if v:
            first = v[0] if isinstance(v[0], str) else next(iter(v[0]), v[0])
            raise ValueError(f"unknown augmentation {first!r}; none is available yet (use [])")
        return v

    @model_validator(mode="after")
    def _loader_options(self):
        from methodo.data.sources import check_dataset_options

        try:
            check_dataset_options(self.source, self.options)
        except ConfigError as exc:
            raise _KeyError(f"data.options.{exc.key}", str(exc)) from None
        return self

    @model_validator(mode="after")
    def _csv_needs_path_and_target(self):
        if self.source == "csv":
            if not self.path:
                raise _KeyError("data.path", "source 'csv' needs data.path, the CSV file to read")
            if not self.target:
                raise _KeyError("data.target", "source 'csv' needs data.target, the column to predict")
        return self


class ModelConfig(_Named):
    name: str = Field(description="Model: a registry name (see `methodo list models`).")


class OptimizerConfig(_Named):
    name: str = Field("sgd", description="A torch.optim optimizer (see `methodo list optimizers`).")
    lr: float = Field(0.01, gt=0, description="Learning rate.")


class SchedulerConfig(_Named):
    name: str = Field("none", description="LR scheduler (see `methodo list schedulers`).")


class EarlyStoppingConfig(_Strict):
    monitor: str = Field("val_loss", description="Epoch metric to watch, e.g. val_loss, val_accuracy.")
    mode: Literal["min", "max"] | None = Field(
        None, description="min or max; inferred from the monitor when omitted."
    )
    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")

    @field_validator("monitor")
    @classmethod
    def _monitor(cls, v):
        if not v.startswith(("val_", "train_")):
            raise ValueError(f"monitor must name a train_ or val_ epoch metric, e.g. 'val_loss' (got {v!r})")
        return v

    @property
    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        return "min" if self.monitor.endswith(("loss", "mae", "rmse", "error", "perplexity")) else "max"


class TrainConfig(_Strict):
    epochs: int = Field(30, ge=1, le=100_000, description="Maximum number of epochs.")
    batch_size: int = Field(64, ge=1, description="Training batch size.")
    eval_batch_size: int = Field(1024, ge=1, description="Batch size for evaluation.")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="Optimizer.")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="LR scheduler.")
    early_stopping: EarlyStoppingConfig | None = Field(
        default_factory=EarlyStoppingConfig, description="Early stopping; null disables it."
    )
    divergence_factor: float = Field(
        1e4, ge=0, description="Stop when the loss exceeds this × the first batch's loss (0: only NaN/inf)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks cuda when present.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null keeps torch's default.")
    progress: bool = Field(True, description="Show a progress bar.")


class ThresholdConfig(_Strict):
    rule: Literal["max_f1", "youden", "target_recall", "target_precision", "fixed"] = Field(
        "max_f1", description="How the binary decision threshold is chosen on the validation split."
    )
    value: float | None = Field(
        None, ge=0, le=1, description="The target recall/precision, or the fixed threshold."
    )

    @model_validator(mode="after")
    def _needs_value(self):
        if self.rule in ("target_recall", "target_precision", "fixed") and self.value is None:
            raise _KeyError("evaluate.threshold.value", f"rule {self.rule!r} needs a value between 0 and 1")
        return self


class EvaluateConfig(_Strict):
    metrics: list[str] | None = Field(
        None, description="Metrics to report (see `methodo list metrics`); default: all of the task's."
    )
    bootstrap: int = Field(300, ge=0, description="Bootstrap resamples for the test intervals (0: none).")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the bootstrap intervals.")
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig, description="Binary threshold rule.")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v):
        if v is None:
            return v
        from methodo.evaluate.metrics import METRICS

        for name in v:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; choose from {choices(METRICS.names())}")
        return v


class TrackConfig(_Strict):
    mlflow: bool = Field(True, description="Log the run to MLflow.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI or ./mlflow.db."
    )
    experiment: str | None = Field(None, description="MLflow experiment; default the config name.")


class Config(_Strict):
    name: str = Field("experiment", min_length=1, description="Experiment name.")
    seed: int = Field(0, ge=0, description="The one seed behind every random choice.")
    task: Literal["classification", "regression", "segmentation", "language_modeling"] | None = Field(
        None, description="Task; inferred from the dataset when omitted."
    )
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class _KeyError(ValueError):
    """A validation error that knows its full dotted key (raised from nested validators)."""

    def __init__(self, key: str, msg: str):
        super().__init__(msg)
        self.key = key


# --------------------------------------------------------------------------- loading


class SafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (plain data only), reading ``1e-3`` as a float as YAML 1.2 does.

    YAML 1.1 needs a dot (``1.0e-3``), so ``lr: 1e-3`` would otherwise be the string "1e-3".
    """


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - SafeLoader subclass: plain data only


def _read_yaml(path: Path) -> tuple[dict, yaml.Node | None]:
    """The YAML document as plain data, plus its node tree (for line numbers)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = safe_load(text)
        node = yaml.compose(text, Loader=SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if "could not determine a constructor" in str(exc):
            problem = f"{problem.strip()}: only plain YAML data is allowed (no python/object tags)"
        raise ConfigError(f"{path}{where}: invalid YAML: {problem.strip()}") from None
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys (got {type(data).__name__})")
    return data, node


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node on the path ``loc``."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for k, v in node.value:
                if k.value == str(part):
                    found = k, v
                    break
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def apply_overrides(data: dict, overrides: list[str]) -> dict[str, str]:
    """Apply ``a.b.c=value`` overrides in place (value parsed as YAML); returns key → override text."""
    origin = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=3")
        try:
            value = safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if isinstance(nxt, str) and part in ("optimizer", "scheduler", "model"):
                nxt = {"name": nxt}  # expand the string shorthand so its options can be set
            if nxt is None:
                nxt = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            node[part] = nxt
            node = nxt
        node[parts[-1]] = value
        origin[key] = item
    return origin


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = Config
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        model = next((a for a in args if issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _describe(err: dict) -> tuple[tuple, str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyError):
        return tuple(ctx_err.key.split(".")), str(ctx_err)
    if isinstance(ctx_err, ConfigError):
        return loc, str(ctx_err).split(": ", 1)[-1]
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return loc, f"unknown key; allowed keys here: {choices(allowed)}"
    if err["type"] == "missing":
        return loc, "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    if err["type"] not in ("model_type", "dict_type") and not isinstance(got, dict):
        msg = f"{msg} (got {got!r})"
    return loc, msg


def validate(data: dict, *, source: str = "config", node: yaml.Node | None = None,
             origin: dict[str, str] | None = None) -> Config:
    """Validate plain data into a :class:`Config` or raise one-line :class:`ConfigError`."""
    try:
        cfg = Config.model_validate(data)
        _check_components(cfg)
        return cfg
    except ValidationError as exc:
        loc, msg = _describe(exc.errors()[0])
    except _KeyError as exc:
        loc, msg = tuple(exc.key.split(".")), str(exc)
    key = ".".join(str(p) for p in loc) or "(top level)"
    origin = origin or {}
    over = next((o for k, o in origin.items() if key == k or key.startswith(k + ".")), None)
    if over:
        where = f"override {over!r}"
    else:
        line = _line_of(node, loc)
        where = f"{source} line {line}" if line else source
    raise ConfigError(f"{where}: {key}: {msg}")


def _check_components(cfg: Config) -> None:
    """Check names and options of registry-backed components (model, optimizer, scheduler)."""
    from methodo.models import check_model_options, check_model_task
    from methodo.train.optim import check_optimizer_options
    from methodo.train.schedules import check_scheduler_options

    if cfg.task is not None:  # a declared task picks the models that fit before their options are checked
        try:
            check_model_task(cfg.model.name, cfg.task)
        except ConfigError as exc:
            raise _KeyError("model.name", str(exc)) from None

    for fn, sub, key in (
        (check_model_options, cfg.model, "model"),
        (check_optimizer_options, cfg.train.optimizer, "train.optimizer"),
        (check_scheduler_options, cfg.train.scheduler, "train.scheduler"),
    ):
        try:
            fn(sub.name, sub.options)
        except ConfigError as exc:
            raise _KeyError(f"{key}.{exc.key or 'name'}", str(exc)) from None


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file; raises :class:`ConfigError` on any problem."""
    path = Path(path)
    data, node = _read_yaml(path)
    origin = apply_overrides(data, list(overrides))
    return validate(data, source=str(path), node=node, origin=origin)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def flat_params(cfg: Config) -> dict[str, Any]:
    """The resolved config as dotted keys → scalar values (for tracking)."""
    out: dict[str, Any] = {}

    def walk(prefix, v):
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        else:
            out[prefix] = v

    walk("", cfg.to_dict())
    return out
