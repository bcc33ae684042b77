"""Time series for forecasting: windows of past values → the next values of a target series.

A series is one table in time order (one row per time step, one column per variable). It is cut
into every window of ``window`` consecutive rows (stride 1): the inputs ``X`` are the window's values
``(n, window, features)`` — the target series is always variable 0 — and the target ``y`` the next
``horizon`` values of the target column ``(n, horizon)``. Row ``i`` of the dataset is the window that starts at time step ``i``, so rows stay
in time order and the ``time`` split (``methodo.data.split``) cuts the series into a past (train), a
later stretch (val) and the latest (test).

Options (``data.options``): ``window`` past steps per input (default 24), ``horizon`` steps to
predict (default 6), ``period`` the season length of the seasonal-naive baseline (default 12: monthly
data), ``ma`` the length of the moving-average baseline (default ``period``); for ``series_csv`` also
``time``, the time column (parsed as dates, or numbers), and ``features``, the input columns
(default: every numeric column; the target is always one of them).

The baselines' forecasts are computed here from each window's own past (no fitting): ``last`` (the
window's last target value, repeated), ``seasonal`` (the value one period earlier), ``moving_average``
(the mean of the last ``ma`` values). They travel with the rows in ``meta`` so the evaluation scores
them with the same metrics as the model.

Datasets: ``co2`` — real monthly means of the Mauna Loa CO2 record 1958-2001 (statsmodels ships
the weekly data: 2,284 weeks, 59 of them missing, averaged per month: 526 months); ``series_csv`` —
a CSV file with a time column.

Examples
--------
>>> import numpy as np
>>> from methodo.data.series import make_windows
>>> X, y, base = make_windows(np.arange(10, dtype=np.float32)[:, None], 0, window=3, horizon=2, period=2, ma=2)
>>> X.shape, y.shape, y[0].tolist(), base["last"][0].tolist(), base["seasonal"][0].tolist()
((6, 3, 1), (6, 2), [3.0, 4.0], [2.0, 2.0], [1.0, 2.0])
"""

from __future__ import annotations

import numpy as np

from methodo.data.dataset import DATASETS, Dataset
from methodo.errors import DataError, short

BASELINES = ("last", "seasonal", "moving_average")


def check_options(n_steps: int, *, window, horizon, period, ma, what: str) -> tuple[int, int, int, int]:
    """``window``, ``horizon``, ``period`` and ``ma`` as ints, checked against a series of ``n_steps`` rows."""
    out = []
    for key, v in (("window", window), ("horizon", horizon), ("period", period), ("ma", ma)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DataError(f"data.options.{key}: must be an integer >= 1 (got {short(v)})")
        out.append(int(v))
    window, horizon, period, ma = out
    if period > window or ma > window:
        bad = "period" if period > window else "ma"
        raise DataError(f"data.options.{bad}={period if bad == 'period' else ma} is longer than "
                        f"data.options.window={window}: the baseline reads the window's own past; "
                        f"use {bad} <= window")
    if window + horizon > n_steps:
        raise DataError(f"data.options: window={window} + horizon={horizon} is more than the {n_steps} time steps of "
                        f"{what}; use a shorter window or horizon")
    if n_steps - window - horizon + 1 < 20:
        raise DataError(f"data.options: {what} has {n_steps} time steps: only {n_steps - window - horizon + 1} "
                        f"windows of {window}+{horizon}; at least 20 are needed to split; shorten window or horizon")
    return window, horizon, period, ma


def make_windows(values: np.ndarray, target: int, *, window: int, horizon: int, period: int, ma: int
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Every window of a ``(steps, features)`` series: ``X (n, window, features)``, the next ``horizon``
    values of column ``target`` ``y (n, horizon)`` and the baselines' forecasts, each ``(n, horizon)``."""
    from numpy.lib.stride_tricks import sliding_window_view

    values = np.asarray(values, dtype=np.float32)
    n = len(values) - window - horizon + 1
    X = np.ascontiguousarray(sliding_window_view(values, window, axis=0)[:n].transpose(0, 2, 1))
    t = values[:, target]
    y = np.ascontiguousarray(sliding_window_view(t[window:], horizon)[:n])
    past = X[:, :, target]
    k = np.arange(horizon)
    seasonal = past[:, window - period + (k % period)]  # the value one period (or whole periods) before each step
    base = {"last": np.repeat(past[:, -1:], horizon, axis=1),
            "seasonal": np.ascontiguousarray(seasonal),
            "moving_average": np.repeat(past[:, -ma:].mean(1, keepdims=True), horizon, axis=1).astype(np.float32)}
    return X, y, base


def series_dataset(name: str, values: np.ndarray, columns: list[str], target: str, times: np.ndarray, *,
                   window, horizon, period, ma, description: str, what: str) -> Dataset:
    window, horizon, period, ma = check_options(len(values), window=window, horizon=horizon, period=period, ma=ma,
                                                what=what)
    first = [columns.index(target)] + [i for i, c in enumerate(columns) if c != target]
    values, columns = np.asarray(values)[:, first], [columns[i] for i in first]  # the target is variable 0
    X, y, base = make_windows(values, columns.index(target), window=window, horizon=horizon, period=period, ma=ma)
    n = len(y)
    meta = {f"baseline_{k}": v for k, v in base.items()}
    meta["time"] = np.asarray(times[window:window + n], dtype=object)  # the first predicted step of each row
    meta["history"] = values[:, columns.index(target)].copy()  # the whole target series (for the forecast plot)
    ds = Dataset(name, "forecasting", "series", X, y, list(columns), None,
                 f"{description}: {len(values)} time steps, {n} windows of {window} steps → next {horizon} of "
                 f"{target!r}", meta=meta)
    ds.meta["window"], ds.meta["horizon"], ds.meta["period"] = np.array([window]), np.array([horizon]), np.array([period])
    return ds


def _calendar(t: np.ndarray) -> np.ndarray:
    """Times as numbers whose steps are equal on a regular series: month numbers when every date falls on the
    same day of the month at midnight (monthly, quarterly, yearly data: months differ in days), else the
    values (numbers, or nanoseconds of dates)."""
    if np.issubdtype(t.dtype, np.datetime64):
        import pandas as pd

        idx = pd.DatetimeIndex(t)
        if len(set(idx.day)) == 1 and (idx == idx.normalize()).all() and len(set(idx.month)) > 1:
            return np.asarray(idx.year * 12 + idx.month - 1, dtype=np.int64)
        return t.astype("datetime64[ns]").astype(np.int64)
    return t


def co2_monthly() -> tuple[np.ndarray, np.ndarray]:
    """Monthly means of the weekly Mauna Loa CO2 record shipped by statsmodels (ppm), and their months."""
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean()
    monthly = monthly.interpolate(limit_direction="both")  # a month with no measured week: between its neighbours
    return monthly.to_numpy(np.float32), np.asarray(monthly.index.strftime("%Y-%m"), dtype=object)


@DATASETS.register("co2", help="real time series: monthly mean CO2 at Mauna Loa 1958-2001 (statsmodels), "
                   "forecast the next months from the past ones", task="forecasting", kind="series")
def load_co2(data_cfg, *, audit: bool = False, window: int = 24, horizon: int = 6, period: int = 12,
             ma: int | None = None) -> Dataset:
    values, months = co2_monthly()
    return series_dataset("co2", values[:, None], ["co2"], "co2", months, window=window, horizon=horizon,
                          period=period, ma=period if ma is None else ma,
                          description="Mauna Loa CO2, monthly means in ppm (statsmodels' weekly record)",
                          what="dataset 'co2'")


@DATASETS.register("series_csv", help="a time series CSV (data.path): a time column (data.options.time), the target "
                   "column (data.target), rows sorted by time; duplicate or missing times are errors",
                   task="forecasting", kind="series", needs="path")
def load_series_csv(data_cfg, *, audit: bool = False, time: str = "time", window: int = 24, horizon: int = 6,
                    period: int = 12, ma: int | None = None, features: list[str] | None = None) -> Dataset:
    """Read the CSV, parse the time column (dates, else numbers), sort by it, refuse duplicate or
    missing times and missing values (the row named: its line in the file)."""
    from pathlib import Path

    import pandas as pd

    path = Path(data_cfg.path)
    if not path.is_file():
        raise DataError(f"{path}: CSV file not found (data.path)")
    try:
        df = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the CSV ({' '.join(str(exc).split())[:160]})") from None
    cols = [str(c) for c in df.columns]
    if time not in cols:
        raise DataError(f"{path}: no time column {short(time)} (data.options.time); columns: {', '.join(map(repr, cols[:10]))}")
    target = data_cfg.target
    if target is None or target not in cols or target == time:
        raise DataError(f"{path}: data.target must name the series to forecast, one of "
                        f"{', '.join(repr(c) for c in cols if c != time)[:200]} (got {short(target)})")
    line = np.arange(len(df)) + 2  # the CSV line of each row (header is line 1)
    raw = df[time]
    missing = raw.isna().to_numpy()
    if missing.any():
        raise DataError(f"{path} row {int(line[np.argmax(missing)])}: missing time in column {time!r}")
    stamps = pd.to_numeric(raw, errors="coerce")
    if stamps.isna().any():  # not numbers: dates
        stamps = pd.to_datetime(raw, errors="coerce", format="mixed")
        if stamps.isna().any():
            r = int(np.argmax(stamps.isna().to_numpy()))
            raise DataError(f"{path} row {int(line[r])}: time {short(str(raw.iloc[r]))} in column {time!r} is neither "
                            "a date nor a number")
    order = np.argsort(stamps.to_numpy(), kind="stable")
    sorted_t = stamps.to_numpy()[order]
    dup = np.flatnonzero(sorted_t[1:] == sorted_t[:-1])
    if len(dup):
        a, b = sorted(line[order[dup[0]: dup[0] + 2]])
        raise DataError(f"{path} row {int(b)}: duplicate time {short(str(raw.iloc[order[dup[0] + 1]]))} "
                        f"(also row {int(a)}); one row per time step")
    if len(sorted_t) > 2:  # a regular series: every step the most common one
        steps = np.diff(_calendar(stamps.to_numpy())[order])
        vals, counts = np.unique(steps, return_counts=True)
        usual = vals[np.argmax(counts)]
        gap = np.flatnonzero(~np.isclose(steps, usual, rtol=1e-6, atol=0) | (steps <= 0))
        if len(gap):
            r = order[gap[0] + 1]
            raise DataError(f"{path} row {int(line[r])}: time {short(str(raw.iloc[r]))} does not follow "
                            f"{short(str(raw.iloc[order[gap[0]]]))} by the series' usual step (missing or irregular "
                            "time steps); fill the missing steps")
    use = [c for c in cols if c != time and pd.api.types.is_numeric_dtype(df[c])] if features is None else list(features)
    for c in use:
        if c not in cols or c == time:
            raise DataError(f"data.options.features: {short(c)} is not a column of {path}")
    if target not in use:
        if not pd.api.types.is_numeric_dtype(df[target]):
            raise DataError(f"{path}: target column {target!r} is not numeric")
        use = [target] + use
    values = df[use].to_numpy(dtype=np.float64)[order]
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataError(f"{path} row {int(line[order[r]])}: column {use[c]!r} is missing or not a finite number")
    return series_dataset(path.stem, values.astype(np.float32), use, target,
                          np.asarray(raw.to_numpy()[order], dtype=object), window=window, horizon=horizon,
                          period=period, ma=period if ma is None else ma, description=f"series CSV {path.name}",
                          what=str(path))
