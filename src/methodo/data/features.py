"""Feature engineering for tables: a scikit-learn ``Pipeline`` fitted on the training split only.

``data.features`` lists the steps in order, each a name or ``{name: options}``:

- scaling: ``standard``, ``minmax``, ``robust``; ``impute`` fills missing values;
- selection: ``variance_threshold``, ``mutual_info`` (k best), ``f_test`` (k best by a univariate F test),
  ``l1`` (non-zero L1 coefficients), ``rfe`` (recursive elimination);
- extraction: ``pca``, and ``function`` (a named function, e.g. the course's polar transform
  ``(x, y) → (r, θ)``; your own with ``FUNCTIONS.register(NAME, help=..., names=...)``
  or ``fn: "package.module:function"``).

Categorical CSV columns are one-hot encoded by a first step (categories learned from the
training split; an unseen category becomes all zeros). The fitted pipeline is saved beside the
model with ``skops.io`` (no pickle) and reloaded with every type checked against an allow-list.

Examples
--------
>>> import numpy as np
>>> from methodo.data.features import build_pipeline
>>> X = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
>>> pipe, names = build_pipeline([{"name": "function", "fn": "polar"}], task="classification", seed=0,
...                              feature_names=["x", "y"])
>>> np.round(pipe.fit_transform(X, [0, 1, 0]), 3).tolist()
[[1.0, 0.0], [2.0, 1.571], [3.0, 3.142]]
"""

from __future__ import annotations

import math

import importlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from methodo.errors import BadInput, ConfigError, DataError, clip, short
from methodo.tasks import task_spec
from methodo.registry import Registry, check_kwargs

FEATURES = Registry("feature step")
# ``fn(X, columns) -> X'`` usable as ``{name: function, fn: NAME}``; the optional ``names=`` metadata,
# ``names(feature_names, columns) -> new names``, names the output columns.
FUNCTIONS = Registry("feature function")

try:  # scikit-learn base classes; imported lazily by the callers of this module (config checks do not)
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.feature_selection import SelectorMixin
except ImportError:  # pragma: no cover - scikit-learn is a dependency
    BaseEstimator = TransformerMixin = SelectorMixin = object


# --------------------------------------------------------------------------- named functions


def _polar_names(names, columns):
    i, j = columns
    rest = [n for k, n in enumerate(names) if k not in (i, j)]
    return ["r", "theta", *rest]


@FUNCTIONS.register("polar", help="(x, y) → (r, θ): radius and angle of two columns (columns: [x, y]; "
                    "default the first two)", names=_polar_names)
def polar(X: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    i, j = columns
    x, y = X[:, i], X[:, j]
    rest = np.delete(X, [i, j], axis=1)
    return np.column_stack([np.hypot(x, y), np.arctan2(y, x), rest])


def _resolve_function(fn: str) -> tuple[Callable, Callable | None]:
    if fn in FUNCTIONS:
        e = FUNCTIONS.entry(fn)
        return e.obj, e.meta.get("names")
    if ":" in fn:  # the user's own code, imported like any plugin: "package.module:function"
        mod, _, attr = fn.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr), None
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"data.features: cannot import feature function {short(fn)} ({exc})") from None
    raise ConfigError(f"data.features: unknown feature function {short(fn)}; choose one of "
                      f"{', '.join(repr(n) for n in FUNCTIONS.names())} or give 'package.module:function'")


# --------------------------------------------------------------------------- transformers


class CategoricalEncoder(TransformerMixin, BaseEstimator):
    """Numeric columns pass through; categorical columns (the last ``n_categorical``) are one-hot
    encoded with the categories seen in training ("(missing)" for a missing value)."""

    def __init__(self, n_categorical: int = 0):
        self.n_categorical = n_categorical

    def _cat(self, X):
        X = np.asarray(X, dtype=object)
        k = X.shape[1] - self.n_categorical
        num = X[:, :k].astype(np.float64)
        cat = np.where(np.equal(X[:, k:], None), "(missing)", X[:, k:]).astype(str)
        return num, cat

    def fit(self, X, y=None):
        _, cat = self._cat(X)
        self.categories_ = [sorted(set(cat[:, j].tolist())) for j in range(cat.shape[1])]
        return self

    def transform(self, X):
        num, cat = self._cat(X)
        blocks = [num]
        for j, cats in enumerate(self.categories_):
            blocks.append((cat[:, j:j + 1] == np.array(cats, dtype=str)[None, :]).astype(np.float64))
        return np.concatenate(blocks, axis=1)

    def get_feature_names_out(self, input_features=None):
        k = len(input_features) - self.n_categorical
        out = list(input_features[:k])
        for name, cats in zip(input_features[k:], self.categories_):
            out += [f"{name}={c}" for c in cats]
        return np.asarray(out, dtype=object)


class FunctionFeatures(TransformerMixin, BaseEstimator):
    """Apply a named feature function; stores the name only, so the saved pipeline holds no code."""

    def __init__(self, fn: str = "polar", columns: tuple | list | None = None, feature_names: tuple | list = ()):
        self.fn, self.columns, self.feature_names = fn, columns, feature_names

    def _cols(self):
        cols = list(self.columns) if self.columns is not None else [0, 1]
        out = []
        for c in cols:
            if isinstance(c, str):
                if c not in self.feature_names:
                    raise ConfigError(f"data.features: function {self.fn!r}: column {short(c)} not found; "
                                      f"columns: {', '.join(map(repr, self.feature_names))}")
                c = list(self.feature_names).index(c)
            out.append(int(c))
        return tuple(out)

    def fit(self, X, y=None):
        _resolve_function(self.fn)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        fn, _ = _resolve_function(self.fn)
        return np.asarray(fn(np.asarray(X, dtype=np.float64), self._cols()), dtype=np.float64)

    def get_feature_names_out(self, input_features=None):
        _, namer = _resolve_function(self.fn)
        names = list(input_features)
        if namer is not None:
            return np.asarray(namer(names, self._cols()), dtype=object)
        n = self.transform(np.zeros((1, len(names)))).shape[1]
        return np.asarray([f"{self.fn}{i}" for i in range(n)], dtype=object)


def _standardized(X):
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 1e-12, sd, 1.0)


class _MaskSelector(SelectorMixin, BaseEstimator):
    """A selector whose whole fitted state is ``support_`` (and ``scores_``): small and safe to save."""

    def _get_support_mask(self):
        return self.support_


class MutualInfoSelect(_MaskSelector):
    """Keep the ``k`` features with the highest mutual information with the target."""

    def __init__(self, k: int = 10, task: str = "classification", seed: int = 0):
        self.k, self.task, self.seed = k, task, seed

    def fit(self, X, y):
        from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

        fn = mutual_info_classif if task_spec(self.task).has_classes else mutual_info_regression
        self.scores_ = fn(np.asarray(X, dtype=np.float64), y, random_state=self.seed)
        keep = np.argsort(-self.scores_, kind="stable")[: min(self.k, len(self.scores_))]
        self.support_ = np.isin(np.arange(len(self.scores_)), keep)
        return self


class FTestSelect(_MaskSelector):
    """Keep the ``k`` features with the largest univariate F statistic: the ANOVA F between the classes
    (scikit-learn's ``f_classif``), or for regression the F test of a one-feature linear fit (``f_regression``).
    Each feature is scored alone, so it is fast on thousands of columns; a constant column scores 0."""

    def __init__(self, k: int = 10, task: str = "classification", seed: int = 0):
        self.k, self.task, self.seed = k, task, seed

    def fit(self, X, y):
        from sklearn.feature_selection import f_classif, f_regression

        import warnings

        fn = f_classif if task_spec(self.task).has_classes else f_regression
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Features [...] are constant": they score 0 below
            F, _ = fn(np.asarray(X, dtype=np.float64), y)
        self.scores_ = np.nan_to_num(np.asarray(F, dtype=np.float64), nan=0.0, posinf=np.finfo(np.float64).max)
        keep = np.argsort(-self.scores_, kind="stable")[: min(self.k, len(self.scores_))]
        self.support_ = np.isin(np.arange(len(self.scores_)), keep)
        return self


class L1Select(_MaskSelector):
    """Keep the features with a non-zero coefficient in an L1-penalized linear model (fitted on
    standardized copies): logistic regression (``C``) or Lasso (``alpha``)."""

    def __init__(self, C: float = 0.1, alpha: float = 0.05, task: str = "classification", seed: int = 0):
        self.C, self.alpha, self.task, self.seed = C, alpha, task, seed

    def fit(self, X, y):
        from sklearn.linear_model import Lasso, LogisticRegression

        Z = _standardized(X)
        if task_spec(self.task).has_classes:
            m = LogisticRegression(l1_ratio=1.0, C=self.C, solver="saga", max_iter=5000, random_state=self.seed)
            coef = np.abs(np.atleast_2d(m.fit(Z, y).coef_)).max(0)
        else:
            coef = np.abs(Lasso(alpha=self.alpha, random_state=self.seed).fit(Z, y).coef_)
        self.scores_ = coef
        self.support_ = coef > 1e-10
        if not self.support_.any():  # a too-strong penalty zeroes everything: keep the strongest feature
            self.support_[int(np.argmax(coef))] = True
        return self


class RFESelect(_MaskSelector):
    """Recursive feature elimination with a linear model on standardized copies, down to ``n_features``."""

    def __init__(self, n_features: int = 10, step: int = 1, task: str = "classification", seed: int = 0):
        self.n_features, self.step, self.task, self.seed = n_features, step, task, seed

    def fit(self, X, y):
        from sklearn.feature_selection import RFE
        from sklearn.linear_model import LinearRegression, LogisticRegression

        est = (LogisticRegression(max_iter=2000, random_state=self.seed) if task_spec(self.task).has_classes
               else LinearRegression())
        Z = _standardized(X)
        rfe = RFE(est, n_features_to_select=min(self.n_features, Z.shape[1]), step=self.step).fit(Z, y)
        self.support_ = np.asarray(rfe.support_, dtype=bool)
        self.scores_ = -np.asarray(rfe.ranking_, dtype=np.float64)
        return self


# --------------------------------------------------------------------------- the registry

def _count(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be an integer >= 1 (got {short(value)})", key=key)
    return value


def _number(value, key: str, *, low: float, strict: bool = False) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < low or (strict and value == low)):
        raise ConfigError(f"{key} must be a finite number {'>' if strict else '>='} {low:g} (got {short(value)})",
                          key=key)
    return float(value)


@FEATURES.register("standard", kind="scaling", help="scale each feature to mean 0, std 1 (StandardScaler)")
def standard(*, task, seed, feature_names):
    from sklearn.preprocessing import StandardScaler

    return StandardScaler()


@FEATURES.register("minmax", kind="scaling", help="scale each feature to [0, 1] (MinMaxScaler)")
def minmax(*, task, seed, feature_names):
    from sklearn.preprocessing import MinMaxScaler

    return MinMaxScaler()


@FEATURES.register("robust", kind="scaling",
                   help="center on the median, scale by the interquartile range (RobustScaler)")
def robust(*, task, seed, feature_names):
    from sklearn.preprocessing import RobustScaler

    return RobustScaler()


@FEATURES.register("impute", kind="cleaning",
                   help="fill missing values with the training median (strategy: median|mean|most_frequent)")
def impute(*, task, seed, feature_names, strategy: str = "median"):
    from sklearn.impute import SimpleImputer

    if strategy not in ("median", "mean", "most_frequent"):
        raise ConfigError(f"data.features: impute strategy {short(strategy)}; choose 'median', 'mean' or 'most_frequent'")
    return SimpleImputer(strategy=strategy, keep_empty_features=True)


@FEATURES.register("variance_threshold", kind="selection",
                   help="drop features whose training variance is at most threshold (default 0: constant)")
def variance_threshold(*, task, seed, feature_names, threshold: float = 0.0):
    from sklearn.feature_selection import VarianceThreshold

    return VarianceThreshold(threshold=_number(threshold, "threshold", low=0.0))


@FEATURES.register("mutual_info", kind="selection",
                   help="keep the k features sharing most information with the target")
def mutual_info(*, task, seed, feature_names, k: int = 10):
    return MutualInfoSelect(k=_count(k, "k"), task=task, seed=seed)


@FEATURES.register("f_test", kind="selection",
                   help="keep the k features with the largest univariate F statistic (ANOVA F between classes; "
                        "F test of a linear fit for regression)")
def f_test(*, task, seed, feature_names, k: int = 10):
    return FTestSelect(k=_count(k, "k"), task=task, seed=seed)


@FEATURES.register("l1", kind="selection",
                   help="keep features with non-zero L1 coefficients (logistic C / Lasso alpha, standardized)")
def l1(*, task, seed, feature_names, C: float = 0.1, alpha: float = 0.05):
    return L1Select(C=_number(C, "C", low=0.0, strict=True), alpha=_number(alpha, "alpha", low=0.0, strict=True),
                    task=task, seed=seed)


@FEATURES.register("rfe", kind="selection",
                   help="recursive feature elimination with a linear model down to n_features")
def rfe(*, task, seed, feature_names, n_features: int = 10, step: int = 1):
    return RFESelect(n_features=_count(n_features, "n_features"), step=_count(step, "step"), task=task, seed=seed)


@FEATURES.register("pca", kind="extraction",
                   help="project on the first n_components principal components (fitted on train)")
def pca(*, task, seed, feature_names, n_components: int = 10, whiten: bool = False):
    from sklearn.decomposition import PCA

    n_components = _count(n_components, "n_components")
    return PCA(n_components=min(n_components, max(len(feature_names), 1)), whiten=whiten, random_state=seed)


@FEATURES.register("function", kind="extraction",
                   help="a named feature function (fn: polar, or 'package.module:function'; columns: names)")
def function(*, task, seed, feature_names, fn: str = "polar", columns: list | None = None):
    if columns is not None and (not isinstance(columns, (list, tuple)) or not all(
            isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool)) for c in columns)):
        raise ConfigError(f"data.features: function {short(fn)}: columns is a list of column names or indices "
                          f"(got {short(columns)})")
    _resolve_function(fn)
    return FunctionFeatures(fn=fn, columns=None if columns is None else list(columns),
                            feature_names=list(feature_names))


def parse_step(item: Any, index: int, *, key: str = "data.features") -> tuple[str, dict]:
    """``name`` or ``{name: options}`` or ``{name: NAME, opt: ...}`` → ``(name, options)``."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict):
        if "name" in item:
            return str(item["name"]), {k: v for k, v in item.items() if k != "name"}
        if len(item) == 1:
            (name, opts), = item.items()
            if opts is None:
                opts = {}
            if not isinstance(opts, dict):
                raise ConfigError(f"{key}.{index}: options of {short(name)} must be a mapping (got {short(opts)})")
            return str(name), dict(opts)
    raise ConfigError(f"{key}.{index}: expected a name or {{name: options}} (got {short(item)})")


def check_steps(items: list, registry: Registry, *, key: str, reserved=("task", "seed", "feature_names")) -> None:
    """Names and options of each listed step, against the registry entries' signatures."""
    for i, item in enumerate(items):
        name, opts = parse_step(item, i, key=key)
        fn = registry.get(name, key=f"{key}.{i}")
        try:
            check_kwargs(fn, opts, reserved=reserved, what=f"{registry.kind} {name!r}")
            if registry is FEATURES:  # values too: the step's own checks (k >= 1, C > 0, ...) at config time
                fn(task="classification", seed=0, feature_names=["a", "b"], **opts)
        except ConfigError as exc:
            if exc.key is None:
                raise ConfigError(f"{key}.{i}: {str(exc).removeprefix('data.features: ')}") from None
            raise ConfigError(f"{key}.{i}.{exc.key}: {exc}") from None


def build_pipeline(steps: list, *, task: str, seed: int, feature_names: list[str], n_categorical: int = 0):
    """The unfitted scikit-learn Pipeline for ``steps`` (``None`` when there is nothing to do)."""
    from sklearn.pipeline import Pipeline

    parts = []
    if n_categorical:
        parts.append(("encode", CategoricalEncoder(n_categorical=n_categorical)))
    for i, item in enumerate(steps):
        name, opts = parse_step(item, i)
        parts.append((f"{i}_{name}", FEATURES.get(name, key=f"data.features.{i}")(
            task=task, seed=seed, feature_names=feature_names, **opts)))
    if not parts:
        return None, feature_names
    return Pipeline(parts), feature_names


def output_names(pipe, names: list[str]) -> list[str]:
    """Feature names after each step of a fitted pipeline (``f0, f1, ...`` where a step cannot say)."""
    for _, step in pipe.steps:
        try:
            names = [str(n) for n in step.get_feature_names_out(np.asarray(names, dtype=object))]
        except Exception:  # noqa: BLE001 - e.g. a user function without a namer
            n_out = getattr(step, "n_components_", None) or len(names)
            names = [f"f{i}" for i in range(n_out)]
    return names


def fit_transform(pipe, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fit ``pipe`` on the training rows; a failing step is a DataError naming it."""
    import warnings

    try:
        with warnings.catch_warnings():  # scikit-learn's warnings ("No features were selected") become the check below
            warnings.simplefilter("ignore")
            out = np.asarray(pipe.fit_transform(X, y), dtype=np.float32)
    except (ValueError, TypeError, IndexError, ArithmeticError) as exc:
        step = next((n for n, s in pipe.steps if not hasattr(s, "n_features_in_") and not hasattr(s, "support_")),
                    pipe.steps[-1][0])
        raise DataError(f"data.features: step {step!r} failed on the training split: "
                        f"{clip(' '.join(str(exc).split()) or type(exc).__name__, 200)}") from None
    if out.ndim != 2 or out.shape[1] == 0:
        raise DataError("data.features: no feature is left after the steps on the training split; loosen the "
                        "selection (mutual_info k, l1 C/alpha, variance_threshold threshold)")
    return out


# --------------------------------------------------------------------------- saving (no pickle)

_TRUSTED_PREFIXES = ("sklearn.", "methodo.data.features.", "numpy.", "builtins.", "collections.OrderedDict")


def save_pipeline(pipe, path: str | Path) -> Path:
    """Write the fitted pipeline with ``skops.io`` (a safe format: no pickle)."""
    import skops.io as sio

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    sio.dump(pipe, tmp)
    tmp.replace(path)
    return path


def load_pipeline(path: str | Path):
    """Read a pipeline saved by :func:`save_pipeline`; any type outside scikit-learn, numpy and
    methodo's own feature steps is refused rather than loaded."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: feature pipeline file not found")
    untrusted = sio.get_untrusted_types(file=path)
    bad = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if bad:
        raise BadInput(f"{path}: refusing to load types outside scikit-learn/methodo: {', '.join(bad)}")
    return sio.load(path, trusted=untrusted)
