"""The data stage, the data audit and the figures stay bounded as the rows grow (issue 11): a CSV is read
by Arrow as float32 columns (no table of every cell as text), the audit's duplicate and near-duplicate
checks are vectorized with stated caps, and figures draw a few thousand points whatever the rows."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from methodo.config import validate
from methodo.data import load_dataset


def _numeric_csv(path: Path, n: int, d: int = 20) -> Path:
    """``n`` rows of ``d`` float features (6 decimals) and a 0/1 label, written by Arrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    cols = {f"f{j}": np.round(rng.normal(size=n), 6) for j in range(d)}
    cols["label"] = (cols["f0"] + rng.normal(size=n) > 0).astype(np.int64)
    pacsv.write_csv(pa.table(cols), path, write_options=pacsv.WriteOptions(quoting_style="none"))
    return path


def _status_mib(key: str) -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024


def test_a_100k_row_csv_loads_as_float32_in_bounded_memory(tmp_path, monkeypatch):
    from methodo.data import csvread

    n = 100_000
    cfg = validate({"data": {"source": "csv", "path": str(_numeric_csv(tmp_path / "big.csv", n)), "target": "label"},
                    "model": {"name": "mlp"}})
    load_dataset(cfg.data)  # first call: lazy imports and Arrow's thread pool, not counted
    monkeypatch.setattr(csvread, "read_text", lambda path: pytest.fail("a clean numeric CSV went through pandas"))
    rss = Path("/proc/self/clear_refs")
    measure_rss = rss.exists()
    if measure_rss:
        before = _status_mib("VmRSS:")
        try:
            rss.write_text("5")  # resets the peak (VmHWM) to the current RSS
        except OSError:
            measure_rss = False
    tracemalloc.start()
    ds = load_dataset(cfg.data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ds.X.shape == (n, 20) and ds.X.dtype == np.float32 and ds.class_names == ["0", "1"]
    # NumPy allocations: X (7.6 MiB) and a column at a time; the all-text read peaked at 5× X.
    assert peak < 3 * ds.X.nbytes, f"tracemalloc peak {peak / 2**20:.1f} MiB for X of {ds.X.nbytes / 2**20:.1f} MiB"
    if measure_rss:  # Arrow's own buffers are not traced: the process's peak RSS counts them (file: 19 MB)
        grew = _status_mib("VmHWM:") - before
        assert grew < 150, f"peak RSS grew by {grew:.0f} MiB"
