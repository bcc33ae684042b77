"""The run record: what a run knows about itself, typed. ``summary.json`` is its serialized form.

The stages fill a :class:`RunRecord` field by field; the report and the CLI read its fields. The keys
of ``summary.json`` are a public contract (users' scripts read them): a field that is ``None`` and
listed in a model's ``_optional`` is left out of the file, exactly as the untyped summary did, while
core keys (``best_epoch``, ``mlflow_run_id``, ...) are always written, ``null`` when unknown.

Reading a summary back (``RunRecord.read``) validates it: a tampered or damaged file is a
:class:`~methodo.errors.BadInput` naming the key that is wrong, never a value rendered blindly.

Examples
--------
>>> from methodo.record import RunRecord
>>> r = RunRecord(name="x", task="classification", dataset="digits", seed=0)
>>> r.status, r.to_dict()["best_epoch"], "failure" in r.to_dict()
('running', None, False)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_serializer

from methodo.errors import BadInput

Status = Literal["running", "finished", "failed"]
Severity = Literal["critical", "high", "medium", "low", "info"]
Metrics = dict[str, dict[str, float | None]]  # split (or baseline strategy) → metric → value (None: undefined)
Seconds = Annotated[float, Field(ge=0)]


class _Record(BaseModel):
    """Base: unknown keys are refused when a file is read back; optional keys are omitted when None."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    _optional: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler):
        out = handler(self)
        return {k: v for k, v in out.items() if not (v is None and k in self._optional)}


class FindingRecord(_Record):
    """One finding as written: what is wrong, the numbers behind it, and what to do."""

    id: str
    severity: Severity
    title: str
    evidence: dict[str, Any]
    action: str


class SplitInfo(_Record):
    n: int
    class_counts: dict[str, int] | None = None
    class_counts_before_balancing: dict[str, int] | None = None
    n_after_balancing: int | None = None
    _optional = frozenset({"class_counts", "class_counts_before_balancing", "n_after_balancing"})


class DataInfo(_Record):
    """What the data stage saw and did."""

    description: str
    kind: str
    input_shape: list[int]
    n: int
    classes: list[str] | None
    splits: dict[str, SplitInfo]
    balance: str
    class_weights: dict[str, float] | None = None
    features: dict[str, Any] | None = None
    augment: list[Any] | None = None
    count_unit: str | None = None
    extra: dict[str, dict[str, Any]] | None = None
    digest: str | None = None  # sha256 of the loaded data (Dataset.digest): what `methodo reproduce` checks
    _optional = frozenset({"class_weights", "features", "augment", "count_unit", "extra", "digest"})


class ThresholdInfo(_Record):
    """The binary decision threshold chosen on validation, and what it gives."""

    rule: str
    value: float
    why: str
    val: dict[str, float | None]
    test: dict[str, float | None]
    test_at_0_5: dict[str, float | None] = Field(alias="test_at_0.5", serialization_alias="test_at_0.5")
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class ReferenceInfo(_Record):
    """A flexible scikit-learn model on the same table: noise or bias? Fitted on ``train_rows`` of the
    ``train_rows_total`` training rows, scored on ``val_rows`` of ``val_rows_total`` (a seeded sample
    above ``evaluate.reference_max_rows``)."""

    model: str
    metric: str
    train: float
    val: float
    train_rows: int | None = None
    train_rows_total: int | None = None
    val_rows: int | None = None
    val_rows_total: int | None = None
    _optional = frozenset({"train_rows", "train_rows_total", "val_rows", "val_rows_total"})


class BootstrapInfo(_Record):
    """How one split's intervals were computed: ``method`` ``resample`` (each metric recomputed on
    copied rows) or ``weights`` (the same resamples as counts per row, evaluate/bootstrap.py), the
    rows of every resample, the resamples each metric got, and ``evaluate.bootstrap_budget``."""

    method: Literal["resample", "weights"]
    rows: int
    replicates: dict[str, int]
    budget: int
    level: float = 0.95  # evaluate.confidence: the intervals' coverage


class LRFindInfo(_Record):
    suggested_lr: float
    suggestion: str
    suggestions: dict[str, float]
    diverged: bool
    steps: int | None = None
    applied_to: list[str] | None = None
    _optional = frozenset({"steps", "applied_to"})


class GradNormInfo(_Record):
    median: float
    max: float
    clipped_to: float | None


class TrainingInfo(_Record):
    optimizer_steps: int
    skipped_batches: list[dict[str, Any]]
    grad_norm: GradNormInfo | None


class SampleInfo(_Record):
    prompt: str
    continuation: str
    temperature: float


class EnsembleInfo(_Record):
    members: int
    epochs: list[int] | None = None
    steps: list[int] | None = None
    epochs_averaged: int | None = None
    metrics: Metrics
    _optional = frozenset({"epochs", "steps", "epochs_averaged"})


class FoldInfo(_Record):
    fold: int
    run_dir: str
    status: Status
    epochs_run: int
    best_epoch: int | None
    metrics: Metrics


class KFoldInfo(_Record):
    folds: int
    runs: list[FoldInfo]
    mean: dict[str, float | None] | None = None
    std: dict[str, float | None] | None = None
    _optional = frozenset({"mean", "std"})


class DistributedInfo(_Record):
    """How a DDP run (torchrun, ``methodo run --nproc``) split its work: ``global_batch`` rows per optimizer
    step, ``per_rank_batch`` of them on each of ``world_size`` processes, and the LR scaling applied."""

    world_size: int
    backend: str
    global_batch: int
    per_rank_batch: int
    lr_scaling: str
    lr_factor: float
    lr: float | None = None  # the optimizer's LR after scaling (None while lr=auto is unresolved)
    restarts: int = 0  # torchrun restarts (--max-restarts) or Slurm requeues this run went through
# --------------------------------------------------------------------------- trust (issue 17)
# `fairness` and `robustness` stay plain mappings in the record (the stages and the findings read them as
# such); these models are their schema, checked on every assignment and when a summary is read back, so a
# damaged section is refused naming its key instead of reaching the report.

Num = float | None
Interval = list[float] | None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class FairnessSplit(_Open):
    groups: dict[str, dict[str, float | None]]
    overall: dict[str, float | None]
    disparity: dict[str, Num]
    disparity_groups: list[str] = Field(default_factory=list)
    too_small: list[str] = Field(default_factory=list)
    intervals: dict[str, dict[str, Interval]] | None = None
    disparity_intervals: dict[str, Interval] | None = None


class ProxyInfo(_Open):
    feature: str
    group: str
    auc: float


class LabelBiasInfo(_Open):
    model: str
    reference_group: str
    rates_at_equal_features: dict[str, float]
    observed_positive_rate: dict[str, float]
    gap: dict[str, float]
    interval: dict[str, Interval]


class FairnessAttribute(_Open):
    splits: dict[str, FairnessSplit]
    proxies: list[ProxyInfo] | None = None
    label_bias: LabelBiasInfo | None = None


class MitigationRow(_Open):
    name: str
    how: str
    accuracy: float
    accuracy_interval: Interval = None
    disparity: dict[str, Num]
    disparity_intervals: dict[str, Interval] = Field(default_factory=dict)


class MitigationInfo(_Open):
    attribute: str
    constraint: str
    measures: list[str]
    rows: list[MitigationRow]
    skipped: dict[str, str] = Field(default_factory=dict)


class FairnessInfo(_Open):
    positive_class: str | None
    decision: str
    sensitive_as_feature: bool
    bound: float
    min_group: int
    level: float
    resamples: int
    attributes: dict[str, FairnessAttribute]
    mitigation: MitigationInfo | None = None


class AttackRow(_Open):
    eps: float | None = None
    pixels: int | None = None
    accuracy: float
    interval: Interval = None
    images: int
    fooled: int
    fooled_fraction: float
    fooled_confidence: Num = None


class CorruptionInfo(_Open):
    accuracy: dict[str, list[float]]
    mce: float
    relative_mce: float
    clean_error: float


class RobustnessInfo(_Open):
    images: int
    clean_accuracy: float
    clean_interval: Interval = None
    level: float
    attacks: dict[str, list[AttackRow]]
    corruptions: CorruptionInfo | None = None
    sample: dict[str, int] | None = None
    before_adversarial_training: "RobustnessInfo | None" = None
    adversarial_training: dict[str, Any] | None = None


def _checked(model: type[BaseModel]):
    """A validator that checks a plain mapping against ``model`` and keeps it as it is."""
    def check(v):
        if v is not None:
            model.model_validate(v)
        return v
    return AfterValidator(check)


class ModelInfo(_Record):
    name: str
    parameters: int


class TransferInfo(_Record):
    """How a run reused a trained model (``transfer``): the strategy, what it trained of the whole, the
    time per epoch, the pretrained weights, what the backbone expects of its inputs beside what the data
    is, and the comparisons asked for (the same model from scratch, the teacher in distillation)."""

    strategy: str
    trainable_parameters: int
    total_parameters: int
    trainable_share: float
    blocks: int
    epoch_time_s: float | None = None
    lr_decay: float | None = None
    unfreeze_every: int | None = None
    all_unfrozen_at_epoch: int | None = None
    pretrained: dict[str, Any] | None = None
    expects: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    lora: dict[str, Any] | None = None
    adapter: dict[str, Any] | None = None
    scratch: dict[str, Any] | None = None
    distill: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    cached_features: dict[str, Any] | None = None
    _optional = frozenset({"epoch_time_s", "lr_decay", "unfreeze_every", "all_unfrozen_at_epoch", "pretrained",
                           "expects", "data", "lora", "adapter", "scratch", "distill", "probe", "cached_features"})


class DiagnosisInfo(_Record):
    """What the run-stage checks read that no other file of the run dir keeps at full precision, so that
    ``methodo diagnose RUN_DIR`` recomputes every finding exactly: ``val_loss_se``, the standard error of the
    mean validation loss at the kept weights (per-row cross-entropy; ``None`` for tasks without it), which
    ``overfitting`` compares the rise of the validation loss with."""

    val_loss_se: float | None = None


class RunRecord(_Record):
    """Everything ``summary.json`` holds. Fields are filled by the stages in the order of ``pipeline.run``."""

    status: Status = "running"
    name: str
    task: str | None
    dataset: str
    seed: int
    world_size: int = 1
    data: DataInfo | None = None
    model: ModelInfo | None = None
    metrics: Metrics = Field(default_factory=dict)
    baselines: Metrics = Field(default_factory=dict)
    findings: list[FindingRecord] = Field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int | None = None
    duration_s: float = 0.0
    mlflow_run_id: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    git_commit: str | None = None
    resumed: bool = False
    # filled by the stages that ran; absent from summary.json otherwise
    lr_find: LRFindInfo | None = None
    stopped_early: bool | None = None
    training: TrainingInfo | None = None
    undefined: dict[str, dict[str, str]] | None = None
    intervals: dict[str, dict[str, list[float] | None]] | None = None
    bootstrap: dict[str, BootstrapInfo] | None = None
    tables: dict[str, dict[str, Any]] | None = None
    threshold: ThresholdInfo | None = None
    extra_baselines: dict[str, Metrics] | None = None
    reference: ReferenceInfo | None = None
    ensembles: dict[str, EnsembleInfo] | None = None
    sample: SampleInfo | None = None
    generation: dict[str, Any] | None = None  # task generation: samples scored by a classifier beside real and baseline
    explain: dict[str, Any] | None = None
    metrics_std: Metrics | None = None
    kfold: KFoldInfo | None = None
    # who the errors fall on (data.sensitive: per-group metrics, disparities, proxies, label bias, mitigations)
    fairness: Annotated[dict[str, Any] | None, _checked(FairnessInfo)] = None
    # accuracy under attack and corruption (evaluate.robustness or `methodo robustness`)
    robustness: Annotated[dict[str, Any] | None, _checked(RobustnessInfo)] = None
    failure: str | None = None
    transfer: TransferInfo | None = None
    # wall seconds per stage in the order they ran, then "total" (the whole call); written when the run closes
    timings: dict[str, Seconds] | None = None
    distributed: DistributedInfo | None = None  # DDP runs only (world_size > 1)
    diagnosis: DiagnosisInfo | None = None  # what the checks read beyond the other files (methodo diagnose)
    _optional = frozenset({"distributed", "diagnosis", "data", "model", "lr_find", "stopped_early", "training", "undefined", "intervals",
                           "bootstrap", "tables", "threshold", "extra_baselines", "reference", "ensembles", "sample",
                           "generation",
                           "explain", "metrics_std", "kfold", "failure", "timings", "transfer", "fairness",
                           "robustness"})

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` mapping (plain data; numpy scalars inside evidence are left to the writer)."""
        return self.model_dump(mode="python")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def update(self, values: dict[str, Any]) -> None:
        """Set several fields from a stage's output mapping (each key must be a field; values are
        validated into the field's type)."""
        for k, v in values.items():
            if k not in type(self).model_fields:
                raise KeyError(f"RunRecord has no field {k!r}")
            setattr(self, k, v)

    @classmethod
    def parse(cls, data: Any, *, source: str = "summary.json") -> "RunRecord":
        """Validate plain data as a record; :class:`BadInput` naming the first wrong key otherwise."""
        if not isinstance(data, dict):
            raise BadInput(f"{source}: a run summary must be a JSON object (got {type(data).__name__})")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            raise BadInput(f"{source}: {key}: {msg}") from None

    @classmethod
    def read(cls, path: Path, text: str) -> "RunRecord":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.parse(data, source=str(path))

