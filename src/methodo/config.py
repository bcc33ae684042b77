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
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer,
                      model_validator)

from methodo.errors import ConfigError, choices, clip, short
from methodo.registry import REGISTRIES

class _NamesValue(ValueError):
    """A validation message that already names the bad value (no "(got ...)" is appended)."""


def registered(registry: str) -> AfterValidator:
    """Pydantic validator: the value names an entry of ``REGISTRIES[registry]`` (imported on first use).

    ``Annotated[str, registered("datasets")]``; for a list, annotate the item type so the error
    names the item's key (``evaluate.metrics.1``) and YAML line.
    """
    def check(value):
        try:
            return REGISTRIES.get(registry).check(value)
        except ConfigError as exc:
            raise _NamesValue(str(exc)) from None

    return AfterValidator(check)


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
    #: For the config reference: what the other keys are and the command that lists the choices.
    options_help: ClassVar[str] = ""

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
    method: Annotated[str, registered("splits")] = Field(
        "stratified", description="How rows are assigned to train/val/test (seeded): random, stratified, group, "
        "cluster, kfold, official or time (see `methodo list splits`). Forecasting data defaults to time."
    )
    val: float = Field(0.15, gt=0, lt=1, description="Fraction of rows for validation.")
    test: float = Field(0.15, gt=0, lt=1, description="Fraction of rows for the final test (not used by kfold "
                        "and official).")
    group: str | None = Field(None, description="group split: the CSV column holding each row's group, or for an "
                              "image folder a regex with one (...) capture over the file path.")
    clusters: int = Field(8, ge=3, description="cluster split: number of KMeans clusters.")
    cluster_on: Literal["features", "pca"] = Field(
        "pca", description="cluster split: cluster the standardized features, or their first 16 PCA components.")
    folds: int = Field(5, ge=2, le=100, description="kfold split: number of folds (one run per fold).")
    fold: int | None = Field(None, ge=1, description="kfold split: run only this fold (1..folds); null runs all.")

    @model_validator(mode="after")
    def _fractions(self):
        if self.val + self.test >= 1:
            raise ValueError(
                f"val + test must leave rows for training (val={self.val} + test={self.test} >= 1)"
            )
        if self.method == "group" and not self.group:
            raise _KeyError("data.split.group", "method 'group' needs data.split.group: a CSV column, or for an "
                            "image folder a regex with one (...) capture over the file path")
        if self.fold is not None and self.fold > self.folds:
            raise _KeyError("data.split.fold", f"fold {self.fold} is outside 1..folds={self.folds}")
        return self


class DataConfig(_Strict):
    source: Annotated[str, registered("datasets")] = Field(
        description="Dataset: a registry name (see `methodo list datasets`), csv, imagefolder, mnist, fashion_mnist "
        "or cifar10.")
    path: str | None = Field(None, description="File or folder for csv / imagefolder; download folder for mnist, "
                             "fashion_mnist, cifar10 (default $METHODO_DATA or ~/.cache/methodo/datasets).")
    target: str | None = Field(None, description="Target column for csv.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Train/val/test split.")
    balance: Annotated[str, registered("balancers")] = Field(
        "none", description="Class balancing on the training split only: none, undersample, oversample, smote, "
        "class_weights or weighted_sampler (see `methodo list balancers`)."
    )
    augment: list[Any] = Field(default_factory=list, description="Training-only image augmentations, each a name "
                               "or {name: options} (see `methodo list augmentations`).")
    features: list[Any] = Field(default_factory=list, description="Table feature steps fitted on train only, each a "
                                "name or {name: options} (see `methodo list features`).")
    scale: Literal["standard", "none"] = Field(
        "standard", description="Feature scaling, fitted on the training split only."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of the dataset's loader, e.g. shapes: {n: 600, size: 32}."
    )
    categorical: list[str] = Field(default_factory=list, description="csv: columns to treat as categories "
                                   "(others are found automatically: mostly non-numeric).")
    ignore: list[str] = Field(default_factory=list, description="csv: columns that are not features (ids, ...).")
    sensitive: list[str] = Field(
        default_factory=list, description="csv: columns holding a sensitive attribute (gender, age band, ...): each "
        "row's group gets per-group metrics, disparity measures and the fairness findings (section `fairness`). "
        "Kept out of the features unless data.sensitive_as_feature. A dataset may also provide its own.")
    sensitive_as_feature: bool = Field(
        False, description="Also give the sensitive columns to the model as features (default: kept for "
        "evaluation only; removing them is not enough when another feature is a proxy, see proxy_feature).")
    image_size: int | list[int] | None = Field(None, description="imagefolder: resize every image to this size "
                                               "(int or [height, width]); null keeps the common size.")
    channels: Literal["auto", "1", "3"] = Field("auto", description="imagefolder: 1 (gray), 3 (RGB) or auto "
                                                 "(RGB when any image has color).")
    max_image_pixels: int = Field(
        89_478_485, ge=1, description="imagefolder: largest image (width × height) read; a larger one is refused "
        "before decoding (a guard against decompression bombs; the default is Pillow's).")
    workers: int = Field(0, ge=0, le=1024, description="DataLoader worker processes decoding image files (0: in "
                         "process; at most the number of CPUs is used).")
    download: bool = Field(True, description="mnist, fashion_mnist, cifar10: download when the files are missing.")

    @field_validator("augment", "features", mode="before")
    @classmethod
    def _null_is_empty(cls, v):  # `data.augment=null` empties the list, as null unsets other options
        return [] if v is None else v

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v):
        if v is None:
            return v
        sizes = [v] if isinstance(v, int) else v
        if len(sizes) not in (1, 2) or any(s < 1 for s in sizes):
            raise ValueError("image_size is a size >= 1 or [height, width]")
        return v

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_as_text(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, v):
        from methodo.data.augment import build_steps

        try:
            build_steps(v)
        except ConfigError as exc:
            key, _, msg = str(exc).partition(": ")
            raise _KeyError(key, msg) from None
        return v

    @field_validator("features")
    @classmethod
    def _known_features(cls, v):
        from methodo.data.features import FEATURES, check_steps

        try:
            check_steps(v, FEATURES, key="data.features")
        except ConfigError as exc:
            key, _, msg = str(exc).partition(": ")
            raise _KeyError(key, msg) from None
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
    def _source_needs(self):
        if self.source == "csv":
            if not self.path:
                raise _KeyError("data.path", "source 'csv' needs data.path, the CSV file to read")
            if not self.target:
                raise _KeyError("data.target", "source 'csv' needs data.target, the column to predict")
        if self.source == "text_csv":
            if not self.path:
                raise _KeyError("data.path", "source 'text_csv' needs data.path, the CSV file to read")
            if not self.target:
                raise _KeyError("data.target", "source 'text_csv' needs data.target, the label column")
        if self.source == "textfolder" and not self.path:
            raise _KeyError("data.path", "source 'textfolder' needs data.path, a folder with one subfolder per class")
        if self.source == "imagefolder" and not self.path:
            raise _KeyError("data.path", "source 'imagefolder' needs data.path, a folder with one subfolder per class")
        return self


class ModelConfig(_Named):
    options_help: ClassVar[str] = (
        "Other keys are the chosen model's own options (keyword arguments of its builder, e.g. width and dropout "
        "for cnn); `methodo list models` lists the models, `methodo config show model --options NAME` the options "
        "of model NAME with their defaults, and an option the model does not take is refused with the list of "
        "those it accepts.")
    name: str = Field(description="Model: a registry name (see `methodo list models`), timm:NAME (any timm "
                      "architecture, `methodo list models --timm FILTER`) or hf:PATH_OR_ID (a Hugging Face sequence "
                      "classifier: a local folder, a package that ships it, or the HF cache; text_csv data).")
    pretrained: str | None = Field(
        None, description="Weights to start from: a .safetensors file, a timm/PyTorch checkpoint (.pth, .bin; "
        "read weights-only), a Hugging Face cache folder, or a methodo run dir (its best weights: pretrain on "
        "the data you have plenty of, reuse on the data you have little of). The head is re-initialized when "
        "the classes differ; any other shape difference is an error naming the weight. For hf: models, null "
        "loads the checkpoint's own weights and 'scratch' starts from random ones. Images then use the "
        "backbone's normalization (timm's mean/std, or the run's) instead of one fitted on train. Nothing is "
        "downloaded.")

    @field_validator("pretrained")
    @classmethod
    def _pretrained_exists(cls, v):
        if v is None:
            return v
        from methodo.models.backbones import check_source

        try:
            check_source(v)
        except ConfigError as exc:
            raise _NamesValue(str(exc)) from None
        return v


class HypergradientConfig(_Strict):
    beta: float = Field(
        description="Hypergradient step β: before each step the LR moves by −β × (new gradient · last update per "
        "unit of LR), so the LR grows while consecutive gradients agree and shrinks when they oscillate (Baydin "
        "et al. 2018, SGD-HD / Adam-HD). Try 1e-4 to 1e-2 for sgd, 1e-8 to 1e-6 for adam (their hypergradients "
        "differ in scale).", gt=0, le=1)


class OptimizerConfig(_Named):
    options_help: ClassVar[str] = (
        "Other keys are the chosen optimizer's own options (keyword arguments of its torch.optim class, e.g. "
        "momentum and weight_decay for sgd, betas for adam); `methodo list optimizers` lists the optimizers, "
        "`methodo config show train.optimizer --options NAME` the options of optimizer NAME with their defaults, "
        "and an option the optimizer does not take is refused with the list of those it accepts.")
    name: str = Field("sgd", description="A torch.optim optimizer (see `methodo list optimizers`).")
    lr: float | Literal["auto"] = Field(
        0.01, description="Learning rate, or 'auto': the LR finder's suggestion (train.lr_find).")

    hypergradient: HypergradientConfig | None = Field(
        None, description="Adapt the learning rate online by hypergradient descent ({beta: ...}); sgd and adam "
        "only, without an LR scheduler (scheduler name none). lr is its starting value. null: off.")

    @model_serializer(mode="wrap")
    def _drop_unset_hypergradient(self, handler):  # config.yaml keeps its keys when hypergradient is off
        data = handler(self)
        if isinstance(data, dict) and data.get("hypergradient", 0) is None:
            data.pop("hypergradient")
        return data

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, v):
        if v != "auto" and not v > 0:
            raise ValueError("learning rate must be greater than 0, or 'auto'")
        return v


class SchedulerConfig(_Named):
    options_help: ClassVar[str] = (
        "Other keys are the chosen scheduler's own options (e.g. step_size and gamma for step), plus "
        "warmup_epochs, warmup_steps and warmup_start_factor for any scheduler; `methodo list schedulers` lists "
        "the schedulers, `methodo config show train.scheduler --options NAME` the options of scheduler NAME with "
        "their defaults, and an option the scheduler does not take is refused with the list of those it accepts.")
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
            raise ValueError(f"monitor must name a train_ or val_ epoch metric, e.g. 'val_loss' (got {short(v)})")
        return v

    @property
    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        return "min" if self.monitor.endswith(("loss", "mae", "rmse", "error", "perplexity")) else "max"


class LRFindConfig(_Strict):
    start_lr: float = Field(1e-7, gt=0, description="LR range test: first learning rate.")
    end_lr: float = Field(10.0, gt=0, description="LR range test: last learning rate.")
    num_iter: int = Field(100, ge=5, description="LR range test: number of steps (exponential ramp).")
    smooth: float = Field(0.9, ge=0, lt=1, description="Exponential smoothing factor of the loss (0: none).")
    diverge: float = Field(4.0, gt=1, description="Stop when the smoothed loss exceeds this × its minimum.")
    suggestion: Literal["valley", "steepest", "min_div10"] = Field(
        "steepest", description="Which suggestion `lr=auto` uses: the steepest descent of the loss, the "
        "middle of its longest valley (fastai), or the LR of the minimum loss / 10.")

    @model_validator(mode="after")
    def _range(self):
        if self.end_lr <= self.start_lr:
            raise _KeyError("train.lr_find.end_lr",
                            f"end_lr must be above start_lr (start_lr={self.start_lr}, end_lr={self.end_lr})")
        return self


class RegularizationConfig(_Strict):
    """The built-in regularizers below, plus any registered with
    :func:`methodo.train.regularize.register_regularizer` (``train.regularization.NAME: VALUE``).
    Any other key is an error naming the choices."""

    model_config = ConfigDict(extra="allow", strict=True, validate_default=True)

    l1: float = Field(0.0, ge=0, description="L1 strength λ (weights of dim ≥ 2), applied as l1_method says.")
    l1_method: Literal["penalty", "proximal"] = Field(
        "penalty", description="How L1 acts. penalty: λ·Σ|w| is added to the loss (its subgradient leaves weights "
        "oscillating near 0, never exactly 0). proximal: soft-thresholding after each optimizer step, "
        "w ← sign(w)·max(|w| − lr·λ, 0) with the LR of the weight's parameter group (ISTA / proximal SGD): "
        "weights reach exactly 0.0 and stay there while |gradient| < λ. With Adam and other adaptive optimizers "
        "the threshold is still lr·λ, not Adam's per-weight lr·λ/√v: not the exact proximal step of the "
        "preconditioned problem, and as an Adam step moves a weight by about lr at most, λ is measured against 1 "
        "(at λ ≥ 1 a zero weight hardly ever leaves 0), not against the gradient's size as with SGD.")
    l2: float = Field(0.0, ge=0, description="L2 penalty λ/2·Σw² added to the loss (weights of dim ≥ 2).")
    decoupled_wd: float = Field(
        0.0, ge=0, description="Decoupled weight decay (as AdamW) for any optimizer: after each step "
        "w ← w − lr·λ·w (weights of dim ≥ 2).")
    max_norm: float | None = Field(
        None, gt=0, description="Max-norm constraint: after each step, rescale each unit's incoming "
        "weight vector to L2 norm ≤ this.")
    dropout: float | None = Field(
        None, ge=0, lt=1, description="Set the rate of every dropout layer of the model (null: the model's own).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy target.")

    @model_validator(mode="after")
    def _registered_only(self):
        extra = self.model_extra or {}
        if not extra:
            return self
        from methodo.train.regularize import REGULARIZERS  # only when a key beyond the built-ins is used

        registered = {e.meta["key"].rsplit(".", 1)[1]: e for e in REGULARIZERS.entries()
                      if e.meta["key"].startswith("train.regularization.")}
        for key, value in extra.items():
            entry = registered.get(key)
            if entry is None:
                raise _KeyError(f"train.regularization.{key}", "unknown regularizer; choose one of "
                                + choices(sorted(set(type(self).model_fields) | set(registered))))
            check = entry.meta.get("check")
            try:
                if check is not None:
                    check(value)
                elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"expects a number >= 0 (got {value!r})")
            except (TypeError, ValueError) as exc:
                raise _KeyError(f"train.regularization.{key}", str(exc)) from None
        return self


class ClipConfig(_Strict):
    norm: float | None = Field(None, gt=0, description="Clip the global gradient norm to this.")
    value: float | None = Field(None, gt=0, description="Clip every gradient element to [-value, value].")
    norm_type: float = Field(2.0, gt=0, description="The p of the p-norm for clipping and logging.")


class NanGuardConfig(_Strict):
    policy: Literal["stop", "skip"] = Field(
        "stop", description="On a non-finite loss or gradient: stop the run (exit 3) or skip the batch.")
    check_grads: bool | None = Field(
        None, description="Check the gradients before each optimizer step (one norm per step); null: when "
        "clipping computes the norm anyway or the policy is skip. Unchecked, a NaN gradient is caught by the "
        "next step's loss and the per-epoch weight check, before any checkpoint.")
    max_skips: int = Field(
        10, ge=1, description="With policy skip: stop after this many consecutive skipped batches.")


MONITOR_MIN_STEPS = 64  # train.monitor.every=auto: at least this many optimizer steps between two records


class MonitorConfig(_Strict):
    enabled: bool = Field(True, description="Per-layer weight/gradient quantiles and dead ReLU units, recorded "
                          "before training (epoch 0), every `every` epochs and at the last epoch.")
    every: int | Literal["auto"] = Field(
        "auto", description="Epochs between two records (≥ 1). auto: every epoch once an epoch has at least "
        f"{MONITOR_MIN_STEPS} optimizer steps, else every ⌈{MONITOR_MIN_STEPS} / steps per epoch⌉ epochs, so "
        "that the record (a sort of ≤ 1024 values per layer, one fused norm) stays a small fraction of the "
        "training between two records. The first and the last epoch are always recorded.")
    probe_rows: int = Field(128, ge=1, description="Validation rows (the first ones) on which dead ReLU units are "
                            "counted, read during the validation pass of each recorded epoch.")

    @field_validator("every", mode="before")
    @classmethod
    def _every_positive(cls, v):
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be an integer ≥ 1 or 'auto'")

    def resolved_every(self, steps_per_epoch: int) -> int:
        """Epochs between two records for an epoch of ``steps_per_epoch`` optimizer steps."""
        if self.every != "auto":
            return self.every
        return max(1, -(-MONITOR_MIN_STEPS // max(steps_per_epoch, 1)))


class SWAConfig(_Strict):
    start: float = Field(
        0.75, gt=0, description="First averaged epoch: an epoch number (≥ 1) or a fraction of the epochs (< 1).")
    lr: float | None = Field(None, gt=0, description="SWA learning rate (SWALR); null: keep the schedule's.")
    anneal_epochs: int = Field(
        2, ge=1, description="Epochs to anneal to the SWA learning rate (SWALR starts after the first averaged "
        "epoch and reaches it after this many more).")


class AdversarialConfig(_Strict):
    attack: Literal["fgsm", "pgd"] = Field("pgd", description="The attack making the adversarial examples "
                                           "(torchattacks, on the current weights, against the true labels).")
    eps: float = Field(8 / 255, gt=0, le=1, description="Its L∞ budget in pixel units of images in [0, 1].")
    ratio: float = Field(0.5, gt=0, le=1, description="Adversarial copies mixed into each training batch, as a "
                         "fraction of its rows (their loss is added to the batch's: ratio 1 doubles the batch).")
    steps: int = Field(5, ge=1, le=100, description="pgd: iterations per batch (step size 2.5 × eps / steps).")


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
    progress: bool = Field(True, description="Progress on stderr: live bars on a terminal; in a log file (CI, "
                           "Slurm) one line per epoch and per stage. false: silent.")
    lr_find: LRFindConfig = Field(default_factory=LRFindConfig, description="LR range test (lr=auto, lr-find).")
    regularization: RegularizationConfig = Field(
        default_factory=RegularizationConfig, description="Penalties, constraints, dropout, label smoothing.")
    clip: ClipConfig = Field(default_factory=ClipConfig, description="Gradient clipping (pre-clip norm logged).")
    nan_guard: NanGuardConfig = Field(default_factory=NanGuardConfig, description="Non-finite loss/gradient policy.")
    monitor: MonitorConfig = Field(default_factory=MonitorConfig, description="Weight/gradient monitoring.")
    snapshot_ensemble: bool | None = Field(
        None, description="Save a snapshot at each cosine_restarts cycle end and evaluate their averaged "
        "predictions; null: on with cosine_restarts.")
    swa: SWAConfig | None = Field(None, description="Stochastic weight averaging; null disables it.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast the forward pass to bfloat16.")
    accumulate: int = Field(1, ge=1, description="Gradient accumulation: micro-batches per optimizer step.")
    compile: bool = Field(False, description="torch.compile the model's forward (needs a C compiler on CPU).")
    channels_last: bool = Field(False, description="channels_last memory format for image models and inputs.")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="Learning-rate scaling rule under DDP (torchrun, methodo run --nproc): the LR (and an "
        "explicit scheduler max_lr) × batch_size / lr_base_batch (linear, Goyal et al. 2017) or its square root "
        "(sqrt); none keeps the LR. train.batch_size is the global batch, split across the processes; "
        "summary.json `distributed` records the rule, the factor and the per-process batch.")
    lr_base_batch: int | None = Field(
        None, ge=1, description="The batch the LR was tuned for, for train.lr_scaling; null: the per-process batch "
        "(batch_size / world size), so the factor is the number of processes (linear) or its square root.")
    adversarial: AdversarialConfig | None = Field(
        None, description="Adversarial training (image classification): adversarial copies of a share of each "
        "batch are added to its loss (the loop's extra-loss seam); with evaluate.robustness the report compares "
        "clean and robust accuracy before (the same config without it) and after. null: off.")

    @model_validator(mode="after")
    def _consistent(self):
        if self.snapshot_ensemble and self.scheduler.name != "cosine_restarts":
            raise _KeyError("train.snapshot_ensemble", "snapshot ensembles need cycles: use "
                            f"train.scheduler.name=cosine_restarts (got {short(self.scheduler.name)})")
        if self.optimizer.hypergradient is not None:
            from methodo.train.optim import HYPERGRADIENT

            if self.optimizer.name not in HYPERGRADIENT:
                raise _KeyError("train.optimizer.hypergradient", "hypergradient descent on the LR applies to "
                                f"{choices(HYPERGRADIENT)} (got optimizer {short(self.optimizer.name)})")
            if self.scheduler.name != "none":
                raise _KeyError("train.optimizer.hypergradient", "hypergradient descent sets the LR itself: use "
                                f"train.scheduler.name=none (got {short(self.scheduler.name)})")
        if self.optimizer.name == "lbfgs":  # steps through a closure that re-evaluates the loss
            for key, on in (("train.accumulate", self.accumulate > 1), ("train.clip.norm", self.clip.norm),
                            ("train.clip.value", self.clip.value), ("train.swa", self.swa is not None),
                            ("train.regularization.decoupled_wd", self.regularization.decoupled_wd),
                            ("train.regularization.max_norm", self.regularization.max_norm is not None),
                            ("train.regularization.l1_method", self.regularization.l1_method == "proximal"
                             and self.regularization.l1 > 0),
                            ("train.optimizer.lr", self.optimizer.lr == "auto")):
                if on:
                    raise _KeyError(key, "not supported with the 'lbfgs' optimizer (it steps through a closure "
                                    "that re-evaluates the loss); choose another optimizer or turn this off")
        return self


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


CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg", "pixelate")


class RobustnessConfig(_Strict):
    attacks: list[Literal["fgsm", "pgd", "onepixel"]] = Field(
        default_factory=lambda: ["fgsm", "pgd", "onepixel"], description="Adversarial attacks (torchattacks) on "
        "the test images: fgsm, pgd (L∞, at each eps) and onepixel (differential evolution changing k pixels, at "
        "each of `pixels`).")
    eps: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255], min_length=1,
        description="L∞ budgets of fgsm and pgd, in pixel units of images in [0, 1] (8/255 ≈ 0.031).")
    pgd_steps: int = Field(10, ge=1, le=1000, description="PGD iterations (step size 2.5 × eps / steps).")
    pixels: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        default_factory=lambda: [1, 3], min_length=1, description="onepixel: how many pixels the attack may "
        "change (k); the report states the fraction of images fooled by changing k pixels.")
    onepixel_steps: int = Field(10, ge=1, le=1000, description="onepixel: differential-evolution generations.")
    onepixel_popsize: int = Field(10, ge=1, le=1000, description="onepixel: population size (× k).")
    onepixel_images: int = Field(100, ge=1, description="onepixel: at most this many of the sampled test images "
                                 "(the attack is one search per image).")
    max_images: int = Field(500, ge=1, description="Attack and corrupt a seeded, class-stratified sample of at "
                            "most this many test images (all of them when fewer).")
    corruptions: list[Literal["gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg", "pixelate"]] = Field(
        default_factory=lambda: list(CORRUPTIONS), description="Common corruptions (in the manner of CIFAR-10-C, "
        "torchvision ops) applied to the test images at 5 severities each; [] for none.")
    gallery: int = Field(8, ge=0, le=32, description="Successful adversarial examples drawn in the report's "
                         "gallery (original and fooled prediction with confidence).")
    collapse: float = Field(0.5, gt=0, lt=1, description="not_robust: robust accuracy below this fraction of the "
                            "clean accuracy ...")
    small_eps: float = Field(8 / 255, gt=0, le=1, description="not_robust: ... at an eps at most this.")
    corruption_points: float = Field(0.1, gt=0, lt=1, description="corruption_sensitive: a corruption at severity "
                                     "1 or 2 costs more than this much accuracy (0.1: 10 points).")
    confidence: float = Field(0.9, gt=0, lt=1, description="overconfident_under_attack: the mean confidence of the "
                              "fooled predictions is at least this.")


class EvaluateConfig(_Strict):
    metrics: list[Annotated[str, registered("metrics")]] | None = Field(
        None, description="Metrics to report (see `methodo list metrics`); default: all of the task's."
    )
    bootstrap: int = Field(300, ge=0, description="Bootstrap resamples for the test intervals (0: none).")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Level of the bootstrap intervals.")
    bootstrap_budget: int = Field(
        300_000_000, ge=1, description="Most work one metric's intervals may take, in rows × columns visited: "
        "above 2000 rows a metric gets min(bootstrap, max(50, budget / (rows × columns))) resamples of all the "
        "rows, where columns is 1 for metrics of per-row values (accuracy, F1, log loss, MAE, ...) and the "
        "class or label columns for ranking metrics (ROC AUC, average precision) and per-label F1. "
        "summary.json `bootstrap` says how many each metric got.")
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig, description="Binary threshold rule.")
    reference: bool = Field(True, description="Tables: fit a gradient-boosting reference on the same features, "
                            "so a high error is diagnosed as bias (underfitting) or noise (noise_floor).")
    reference_max_rows: int = Field(
        50_000, ge=20, description="The reference is fitted on a seeded sample of at most this many training rows "
        "(stratified by class, or by target quintile) and scored on at most this many val rows; summary.json "
        "`reference` says how many it used.")
    label_issues: Literal["val_test", "cross_val"] = Field(
        "val_test", description="Where the label_errors check gets out-of-sample probabilities for confident "
        "learning (cleanlab): val_test, the run's own model on the validation and test rows (free, but those "
        "rows only); cross_val, K more models of the same config trained by K-fold cross-fitting, so every "
        "row is checked (K more trainings). Every suspect goes to label_issues.csv. Classification and "
        "multilabel tasks.")
    label_folds: int = Field(5, ge=2, description="K of evaluate.label_issues: cross_val (folds of the "
                             "cross-fitting; each row is predicted by a model trained on the other K-1).")
    robustness: RobustnessConfig | None = Field(
        None, description="Image classification: adversarial (torchattacks) and corruption robustness of the "
        "trained model on the test split, in summary.json `robustness` and the report; null: off (`methodo "
        "robustness RUN_DIR` measures it after the run).")


class LoraConfig(_Strict):
    r: int = Field(8, ge=1, le=1024, description="Rank of the low-rank update B·A of each adapted layer.")
    alpha: float = Field(16.0, gt=0, description="Scaling of the update (alpha / r), as in PEFT.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | None = Field(
        None, description="Names (or name endings) of the layers to adapt; default per family: query/value for "
        "BERT-like hf: models, qkv for timm ViTs, the 1×1/3×3 convolutions' neighbours (conv2, conv3) for timm "
        "ResNets, every Linear but the head otherwise.")


class TransferConfig(_Strict):
    strategy: Annotated[str, registered("strategies")] = Field(
        "none", description="How a pretrained model is trained (see `methodo list strategies`): none (every "
        "weight, one LR), linear_probe (backbone frozen, head trained), finetune (every weight; with lr_decay "
        "< 1, discriminative LRs), gradual_unfreeze (head first, then one more block top-down every "
        "unfreeze_every epochs, as ULMFiT) or lora (low-rank adapters through PEFT; the adapter saved alone).")
    lr_decay: float = Field(1.0, gt=0, le=1, description="Discriminative LRs: block k below the head trains at "
                            "lr × lr_decay^k (1: the same LR everywhere). finetune and gradual_unfreeze.")
    unfreeze_every: int = Field(1, ge=1, le=1000, description="gradual_unfreeze: epochs between two unfrozen blocks.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="strategy lora: the adapters (PEFT LoraConfig).")
    compare_scratch: bool = Field(
        False, description="Also train the same model from random weights with the same budget (epochs, data, "
        "optimizer) and report both, with the pretrained_not_helping check.")
    cache_features: bool = Field(
        True, description="linear_probe: run the frozen backbone once over the training and validation rows and "
        "train the head on its cached features (same numbers up to float rounding, an epoch costs the head "
        "only); not with data.augment or train.swa. transfer.cached_features in the summary says what was done.")


class TeacherModelConfig(ModelConfig):
    """``distill.teacher`` as a model spec: trained first, on the run's own training split."""

    options_help: ClassVar[str] = (
        "As a model spec it is trained first on the run's own training split with the run's train section: "
        "the keys of the model section (name, pretrained, and the model's own options, e.g. width for cnn; "
        "`methodo list models` lists the models) and epochs (default train.epochs).")
    epochs: int | None = Field(None, ge=1, le=100_000, description="Epochs of the teacher's training (default "
                               "train.epochs).")


class DistillConfig(_Strict):
    teacher: str | TeacherModelConfig | None = Field(
        None, description="Knowledge distillation: the teacher whose soft targets the model (the student) learns "
        "from. A methodo run dir (its best weights and its own input scaling; same classes, same input shape), "
        "or a model spec {name, options..., epochs} trained first on this run's training split. Its soft "
        "targets are computed once, on the un-augmented training rows, and cached. null: no distillation. The "
        "summary's transfer.distill puts teacher, distilled student and the same student trained from scratch "
        "with the same budget side by side.")
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature T of the soft targets and the "
                               "student's soft predictions (higher: softer, more of the teacher's dark knowledge); "
                               "the soft loss is scaled by T² (Hinton et al.).")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft (teacher) loss; the hard-label loss "
                         "gets 1 − alpha. 1: the teacher alone; 0: the labels alone.")

    @field_validator("teacher")
    @classmethod
    def _teacher_exists(cls, v):
        if isinstance(v, str):
            from methodo.transfer.distill import check_teacher_dir

            try:
                check_teacher_dir(v)
            except ConfigError as exc:
                raise _NamesValue(str(exc)) from None
        return v


warnings.filterwarnings("ignore", message='Field name "register" in "TrackConfig" shadows', category=UserWarning)


class TrackConfig(_Strict):
    mlflow: bool = Field(True, description="Log the run to MLflow.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI or ./mlflow.db."
    )
    experiment: str | None = Field(None, description="MLflow experiment; default the config name.")
    required: bool = Field(True, description="When the tracking store cannot be reached before the run starts: "
                           "true refuses to run (exit 2, naming the URI); false warns once and runs untracked.")
    # `register` shadows ABCMeta.register (pydantic warns once at import; the filter below keeps it quiet)
    register: str | None = Field(None, min_length=1, max_length=256, description="Register the run's trained model "
                                 "(the MLflow pyfunc model every tracked run logs, runs:/RUN_ID/model) in the MLflow "
                                 "Model Registry under this name (a new version each run); null: log it only.")


class ExplainConfig(_Strict):
    enabled: bool = Field(True, description="Explain the model's test predictions in the report.")
    methods: list[Annotated[str, registered("explainers")]] = Field(
        default_factory=lambda: ["saliency", "integrated_gradients", "occlusion", "lime"],
        description="Image attribution methods (see `methodo list explainers`).")
    n_images: int = Field(6, ge=1, le=32, description="Test images in the gallery (right and wrong predictions); "
                          "for a text model that records attention, the test sentences of its attention strips.")
    permutation_repeats: int = Field(5, ge=1, description="Shuffles per feature for permutation importance.")
    max_rows: int = Field(500, ge=10, le=1_000_000, description="Tables: explain at most this many test rows (a "
                          "seeded sample when the test split is larger; the report says how many).")


class FairnessConfig(_Strict):
    bound: float = Field(0.1, gt=0, lt=1, description="group_disparity: a disparity measure (demographic parity, "
                         "equalized odds or equal opportunity difference) above this on the test split.")
    min_group: int = Field(30, ge=1, description="group_underrepresented: a group with fewer test rows than this.")
    proxy_auc: float = Field(0.75, gt=0.5, lt=1, description="proxy_feature: a feature whose ROC AUC for "
                             "telling a group from the others (one feature alone, on the training rows) is at "
                             "least this.")
    label_gap: float = Field(0.05, gt=0, lt=1, description="label_bias: the training labels' positive rate "
                             "differs by more than this between groups at equal features (the effect of flipping "
                             "only the group in a logistic regression fitted on features + group).")
    mitigation: list[Literal["reweighing", "threshold_optimizer", "exponentiated_gradient", "penalty"]] = Field(
        default_factory=list, description="Mitigations compared side by side with the model (accuracy and "
        "disparity with intervals): reweighing (retrain with the training rows drawn by weights that make group "
        "and label independent), threshold_optimizer (fairlearn; thresholds per group chosen on val, applied to "
        "test), exponentiated_gradient (fairlearn reductions over a logistic regression on the same features, "
        "tables), penalty (retrain with a disparity penalty in the loss, tables).")
    constraint: Literal["demographic_parity", "equalized_odds"] = Field(
        "demographic_parity", description="The fairness constraint the mitigations aim for.")
    penalty: float = Field(1.0, gt=0, description="penalty: weight of the in-loop disparity term (the gap of "
                           "mean positive score between groups, per batch).")


class Config(_Strict):
    name: str = Field("experiment", min_length=1, max_length=100,
                      description="Experiment name; it names the run dir, so letters, digits, '.', '_', '-'.")
    seed: int = Field(0, ge=0, description="The one seed behind every random choice.")
    task: Annotated[str, registered("tasks")] | None = Field(
        None, description="Task (see `methodo list tasks`); inferred from the dataset when omitted."
    )
    data: DataConfig = Field(description="Where the data comes from and how it is split and prepared (every "
                             "transform fitted on the training split only).")
    model: ModelConfig = Field(description="The model to train.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The training loop.")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="Evaluation on val/test beside "
                                     "dummy baselines.")
    transfer: TransferConfig = Field(default_factory=TransferConfig, description="Reusing a pretrained model "
                                     "(model.pretrained): what to freeze, which LR where, adapters.")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Knowledge distillation: train "
                                   "the model on a teacher's soft targets beside the labels.")
    track: TrackConfig = Field(default_factory=TrackConfig, description="Experiment tracking (MLflow).")
    explain: ExplainConfig = Field(default_factory=ExplainConfig, description="Explainability in the report.")
    fairness: FairnessConfig = Field(default_factory=FairnessConfig, description="Per-group metrics and "
                                     "mitigation, when data.sensitive names the groups (classification).")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError(f"name must start with a letter or digit and hold only letters, digits, "
                             f"'.', '_' or '-' (it names the run dir; got {short(v)})")
        return v

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


# Bounds of a config document: a config is a few hundred values. They stop alias bombs (`&a [...]`
# referenced 9 times per level: 9**9 values from a few lines) before anything expands them.
MAX_CONFIG_BYTES = 1_000_000
MAX_NODES = 100_000  # values after alias expansion
MAX_DEPTH = 50  # nesting levels


def _yaml_problem(exc: BaseException) -> tuple[str, str]:
    """``(" line N" or "", problem)`` of a PyYAML error, in one line."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" line {mark.line + 1}" if mark else ""
    text = str(exc).strip()
    problem = getattr(exc, "problem", None) or (text.splitlines()[0] if text else type(exc).__name__)
    context = getattr(exc, "context", None)
    if context and getattr(exc, "problem", None):
        problem = f"{context}: {problem}" if context.startswith("while") else f"{context} {problem}"
    if "could not determine a constructor" in text:
        problem = f"{problem.strip()}: only plain YAML data is allowed (no python/object tags)"
    return where, " ".join(problem.split())


def _check_size(node: yaml.Node, what: str) -> None:
    """Refuse a node graph that expands to more than MAX_NODES values, nests deeper than MAX_DEPTH,
    or refers to itself (a recursive alias). Counts without expanding: each node's expanded size is
    computed once (memoized), so 9 aliases of 9 aliases cost 18 steps, not 81."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    on_path: set[int] = set()
    while stack:
        n, done = stack.pop()
        if done:
            on_path.discard(id(n))
            kids = _children(n)
            size[id(n)] = 1 + sum(size[id(k)] for k in kids)
            depth[id(n)] = 1 + max((depth[id(k)] for k in kids), default=0)
            line = n.start_mark.line + 1
            if size[id(n)] > MAX_NODES:
                raise ConfigError(f"{what} line {line}: the YAML document expands to more than {MAX_NODES} values "
                                  "once its anchors and aliases are repeated out; a config is small: use fewer "
                                  "aliases or values")
            if depth[id(n)] > MAX_DEPTH:
                raise ConfigError(f"{what} line {line}: values are nested more than {MAX_DEPTH} levels deep")
            continue
        if id(n) in size:
            continue
        if id(n) in on_path:
            raise ConfigError(f"{what} line {n.start_mark.line + 1}: an alias refers to the value that contains it "
                              "(a recursive anchor); a config cannot hold an infinite value")
        on_path.add(id(n))
        stack.append((n, True))
        stack.extend((k, False) for k in _children(n) if id(k) not in size)


def _children(n: yaml.Node) -> list[yaml.Node]:
    if isinstance(n, yaml.SequenceNode):
        return list(n.value)
    if isinstance(n, yaml.MappingNode):
        return [x for kv in n.value for x in kv]
    return []


def _check_duplicates(node: yaml.Node, what: str) -> None:
    """A key written twice in one mapping is an error (YAML keeps the last one silently)."""
    seen_nodes: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(node, "")]
    while todo:
        n, path = todo.pop()
        if id(n) in seen_nodes:
            continue
        seen_nodes.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[tuple[str, str], yaml.Node] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    ident = (k.tag, k.value)
                    if ident in first:
                        dotted = f"{path}.{k.value}" if path else k.value
                        raise ConfigError(
                            f"{what} lines {first[ident].start_mark.line + 1} and {k.start_mark.line + 1}: "
                            f"duplicate key {short(dotted)}; a key may appear once in a mapping (keep one of them)")
                    first[ident] = k
                    todo.append((v, f"{path}.{k.value}" if path else str(k.value)))
                else:
                    todo.append((v, path))
        elif isinstance(n, yaml.SequenceNode):
            todo.extend((v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(n.value))


def parse_yaml(text: str, what: str = "config") -> tuple[Any, yaml.Node | None]:
    """Parse one YAML document safely: ``(plain data, node tree)``; ``(None, None)`` when empty.

    Plain data only (:class:`SafeLoader`), bounded (at most ``MAX_CONFIG_BYTES`` characters and
    ``MAX_NODES`` values after alias expansion, ``MAX_DEPTH`` levels), no recursive aliases, no
    duplicate keys. Any problem is a one-line :class:`ConfigError` starting with ``what``.
    """
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what}: {len(text)} characters; a config is at most {MAX_CONFIG_BYTES} characters")
    loader = None
    try:
        loader = SafeLoader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_size(node, what)
        _check_duplicates(node, what)
        return loader.construct_document(node), node
    except yaml.YAMLError as exc:
        where, problem = _yaml_problem(exc)
        raise ConfigError(f"{what}{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{what}: invalid YAML: values are nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a value its constructor refuses: !!int x, 2020-13-45
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "integer string conversion" in reason:
            reason = "an integer with more than 4300 digits"
        raise ConfigError(f"{what}: invalid YAML: a value cannot be read ({clip(reason, 100)})") from None
    finally:
        if loader is not None:
            loader.dispose()


def safe_load(text: str) -> Any:
    """Plain data from YAML text, bounded as :func:`parse_yaml` (a ConfigError otherwise)."""
    return parse_yaml(text)[0]


def _read_yaml(path: Path) -> tuple[dict, yaml.Node | None]:
    """The YAML document as plain data, plus its node tree (for line numbers)."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: config file is {size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes "
                              "(is it the right file?)")
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    text = _decode_text(raw, path)
    data, node = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys (got {type(data).__name__})")
    return data, node


def _decode_text(raw: bytes, path: Path) -> str:
    """UTF-8 text (a UTF-8 BOM is dropped); UTF-16/32 and binary files are one-line errors."""
    import codecs

    for bom, enc in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                     (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if raw.startswith(bom):
            raise ConfigError(f"{path}: the config is {enc} text; save it as UTF-8")
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    if b"\x00" in raw:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes: binary, or UTF-16/32 without a BOM); "
                          "a config is UTF-8 YAML text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path} line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                          "save the config as UTF-8") from None


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node on the path ``loc``."""
    return _match(node, loc)[1]


def _match(node: yaml.Node | None, loc: tuple) -> tuple[int, int | None]:
    """How many parts of ``loc`` the YAML tree holds, and the 1-based line of the deepest one."""
    line, depth = None, 0
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
        elif (isinstance(node, yaml.SequenceNode) and (isinstance(part, int) or str(part).isdigit())
              and int(part) < len(node.value)):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
        depth += 1
    return depth, line


def apply_overrides(data: dict, overrides: list[str]) -> dict[str, str]:
    """Apply ``a.b.c=value`` overrides in place (value parsed as YAML); returns key → override text."""
    origin = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {clip(item)!r}: expected key=value, e.g. train.epochs=3")
        try:
            value = parse_yaml(raw, f"override {clip(item)!r}")[0] if raw.strip() else None
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(": invalid YAML", ": the value is not valid YAML", 1)) from None
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if isinstance(nxt, str) and part in ("optimizer", "scheduler", "model"):
                nxt = {"name": nxt}  # expand the string shorthand so its options can be set
            if nxt is None:
                nxt = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {clip(item)!r}: {'.'.join(parts[: i + 1])} is not a mapping")
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


def _clean_loc(loc: tuple, data: Any, last_may_be_missing: bool) -> tuple:
    """The error's path in the user's data: pydantic adds union-member and validator tags to ``loc``
    (``lr.float``, ``image_size.list[int]``); a part that is not a key (or index) of the data is such a tag."""
    out, node = [], data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and str(part) in {str(k) for k in node}:
            out.append(part)
            node = next(v for k, v in node.items() if str(k) == str(part))
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif i == len(loc) - 1 and last_may_be_missing and isinstance(node, dict):
            out.append(part)
        elif isinstance(part, str) and not re.fullmatch(r"[a-z_]+(\[.*\])?|[A-Z]\w*|function-\w+\[.*\]", part):
            out.append(part)  # not a pydantic tag after all (e.g. a key a validator added)
            node = None
        # else: a tag; skip it
    return tuple(out)


def _describe(err: dict, data: Any = None) -> tuple[tuple, str]:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    if data is not None:
        loc = _clean_loc(loc, data, err["type"] in ("missing", "extra_forbidden"))
    else:
        loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyError):
        return tuple(ctx_err.key.split(".")), str(ctx_err)
    if isinstance(ctx_err, _NamesValue):
        return loc, str(ctx_err)
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
        msg = f"{msg} (got {short(got)})"
    return loc, msg


MAX_MESSAGE = 600  # characters of one error line


def _where(key: str, loc: tuple, *, source: str, node: yaml.Node | None, origin: dict[str, str],
           layers: list[tuple[str, yaml.Node | None]] | None = None) -> str:
    """Who to blame for an error at ``key``: the override that set it, a parent of it or a value inside
    it; else the config file's line (naming an override that changed a sibling, e.g. the optimizer's name
    that made the file's ``momentum`` an unknown option)."""
    related = [o for k, o in origin.items() if key == k or key.startswith(k + ".") or k.startswith(key + ".")]
    if related:
        return f"override {clip(related[-1])!r}"
    depth, line = _match(node, loc)
    for src, nd in (layers or [])[1:]:  # a key the file does not set: the nearest base that sets most of it
        d, ln = _match(nd, loc)
        if d > depth:
            depth, line, source = d, ln, src
    parent = key.rpartition(".")[0]
    siblings = [o for k, o in origin.items() if parent and k.startswith(parent + ".")]
    if siblings and not line:
        return f"override {clip(siblings[-1])!r}"
    where = f"{source} line {line}" if line else source
    return f"{where} (with override {clip(siblings[-1])!r})" if siblings else where


def validate(data: dict, *, source: str = "config", node: yaml.Node | None = None,
             origin: dict[str, str] | None = None, layers: list[tuple[str, yaml.Node | None]] | None = None
             ) -> Config:
    """Validate plain data into a :class:`Config` or raise one-line :class:`ConfigError`."""
    from methodo.registry import load_plugins

    load_plugins()  # installed packages' models, datasets, ... are registered before names are checked
    try:
        cfg = Config.model_validate(data)
        _check_components(cfg)
        return cfg
    except ValidationError as exc:
        loc, msg = _describe(exc.errors()[0], data)
    except _KeyError as exc:
        loc, msg = tuple(exc.key.split(".")), str(exc)
    key = ".".join(str(p) for p in loc) or "(top level)"
    where = _where(key, loc, source=source, node=node, origin=origin or {}, layers=layers)
    text = " ".join(f"{where}: {clip(key, 120)}: {msg}".split())
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE - 3] + "..."
    raise ConfigError(text)


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

    teacher = cfg.distill.teacher
    for fn, sub, key in (
        (check_model_options, cfg.model, "model"),
        *([(check_model_options, teacher, "distill.teacher")] if isinstance(teacher, TeacherModelConfig) else []),
        (check_optimizer_options, cfg.train.optimizer, "train.optimizer"),
        (check_scheduler_options, cfg.train.scheduler, "train.scheduler"),
    ):
        try:
            fn(sub.name, sub.options)
        except ConfigError as exc:
            raise _KeyError(f"{key}.{exc.key or 'name'}", str(exc)) from None
        except (ArithmeticError, ValueError, TypeError, RuntimeError, AssertionError) as exc:
            # the dry build met a value the component's own code did not guard (div_factor=0: a division by zero)
            msg = clip(" ".join(str(exc).split()) or type(exc).__name__, 200)
            opt = next(iter(sub.options), "name")
            raise _KeyError(f"{key}.{opt}", f"{key.split('.')[-1]} {sub.name!r} cannot be built with "
                            f"{short(sub.options)}: {msg}") from None


MAX_BASES = 8  # `base:` chains longer than this are refused (a loop by another name)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file; raises :class:`ConfigError` on any problem.

    A config may start from another: ``base: PATH`` (relative to the file that names it) reads that
    config first and lays this one over it, section by section (a mapping merges key by key; a list
    or a value replaces; a component whose ``name`` changes — ``model``, ``train.optimizer``,
    ``train.scheduler`` — is replaced whole, so no option of the old one is left behind). Errors name
    the file and line that set the wrong key.
    """
    path = Path(path)
    data, layers = _read_layers(path)
    origin = apply_overrides(data, list(overrides))
    return validate(data, source=str(path), node=layers[0][1], origin=origin, layers=layers)


def _read_layers(path: Path) -> tuple[dict, list[tuple[str, yaml.Node | None]]]:
    """The config at ``path`` merged over its ``base:`` chain, and each file's node tree, the file
    itself first (for the line of an error)."""
    chain: list[tuple[Path, dict, yaml.Node | None]] = []
    seen: list[Path] = []
    p = path
    while True:
        data, node = _read_yaml(p)
        chain.append((p, data, node))
        seen.append(p.resolve())
        if "base" not in data:
            break
        base = data.pop("base")
        line = _line_of(node, ("base",))
        where = f"{p} line {line}" if line else str(p)
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{where}: base: the path of the config this one starts from, relative to "
                              f"{p.parent} (got {short(base)})")
        nxt = p.parent / base
        if nxt.resolve() in seen:
            loop = " → ".join(str(q) for q, _, _ in chain) + f" → {nxt}"
            raise ConfigError(f"{where}: base: {base} makes a loop ({loop})")
        if len(chain) > MAX_BASES:
            raise ConfigError(f"{where}: base: more than {MAX_BASES} configs in a chain of bases")
        if not nxt.is_file():
            raise ConfigError(f"{where}: base: {nxt}: config file not found")
        p = nxt
    merged: dict = {}
    for _, data, _ in reversed(chain):
        merged = _merge(merged, data)
    return merged, [(str(q), node) for q, _, node in chain]


def _merge(under: dict, over: dict) -> dict:
    """``over`` laid on ``under``: mappings merge key by key, anything else replaces; a mapping whose
    ``name`` differs (another model, optimizer or scheduler) replaces the old one whole."""
    out = dict(under)
    for k, v in over.items():
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict) and not ("name" in v and v.get("name") != old.get("name")):
            out[k] = _merge(old, v)
        else:
            out[k] = v
    return out


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
