"""The bundled examples give the same numbers as before the issue-9 restructure, bit for bit.

``tests/golden/examples.json`` holds the summary.json numbers of ``examples/{digits,breast_cancer,diabetes}.yaml``
(``track.mlflow=false train.progress=false``) recorded on this project's CI machines. On such a machine (same
CPU model name, torch version and thread count; one set of numbers per torch CPU capability, since AVX2 and
AVX-512 run different convolution kernels) every metric, interval, baseline and the epoch counts must be
equal to the last bit; elsewhere float summation order differs, so only the README's targets are checked.
Each example runs once per session (module fixture) and also carries the README's claims.
"""

from __future__ import annotations

import json
import platform

import pytest
import torch

import methodo

from conftest import DEFAULT_THREADS, EXAMPLES, ROOT

GOLDEN = json.loads((ROOT / "tests" / "golden" / "examples.json").read_text())
COMPARED = ("metrics", "baselines", "intervals", "epochs_run", "best_epoch", "reference", "threshold", "ensembles")


def _recorded_runs() -> dict | None:
    """The recorded numbers this machine must reproduce to the bit, or None when it is not like the recording
    machines: same CPU model name, torch version and thread count, and the numbers of its torch CPU capability
    (an AVX2 machine runs other convolution kernels than the first recording machines did)."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if platform.system() == "Linux" else platform.processor()
    m = GOLDEN["machine"]
    if (cpu, torch.__version__, DEFAULT_THREADS) != (m["cpu"], m["torch"], m["threads"]):
        return None
    return GOLDEN["runs_avx2"] if torch.backends.cpu.get_cpu_capability() == "AVX2" else GOLDEN["runs"]


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    cache: dict[str, methodo.pipeline.RunResult] = {}

    def get(name: str):
        if name not in cache:  # at torch's default thread count, as recorded (an xdist worker computes on one)
            torch.set_num_threads(DEFAULT_THREADS)
            cache[name] = methodo.run(str(EXAMPLES / f"{name}.yaml"), ["track.mlflow=false", "train.progress=false"],
                                      out=root / name)
        return cache[name]
    return get


@pytest.mark.parametrize("name", sorted(GOLDEN["runs"]))
def test_examples_give_the_recorded_numbers(example_runs, name):
    summary = example_runs(name).summary
    want = GOLDEN["runs"][name]
    assert [f["id"] for f in summary["findings"]] == want["findings"]
    recorded = _recorded_runs()
    if recorded is None:
        pytest.skip(f"golden numbers were recorded on {GOLDEN['machine']}; bit-exact comparison only there")
    for key in COMPARED:
        assert json.loads(json.dumps(summary.get(key))) == recorded[name][key], f"{name}: summary[{key!r}] changed"


def test_digits_example_reaches_098(example_runs):
    assert example_runs("digits").metrics["test"]["accuracy"] >= 0.98


def test_breast_cancer_example_reaches_auc_098(example_runs):
    assert example_runs("breast_cancer").metrics["test"]["roc_auc"] >= 0.98


def test_diabetes_error_is_diagnosed_as_noise_not_bias(example_runs, tmp_path):
    """The course's "noise or bias?": on diabetes the MLP's train R² stays below 0.6, and a gradient-boosting
    reference on the same split does no better on val, so the finding is noise_floor, not underfitting."""
    res = example_runs("diabetes")
    ref = res.summary["reference"]
    assert ref["model"] == "HistGradientBoostingRegressor" and ref["metric"] == "r2"
    assert ref["train"] > res.metrics["train"]["r2"]  # it fits train better ...
    assert ref["val"] < res.metrics["val"]["r2"] + 0.03  # ... and generalizes no better
    ids = [f["id"] for f in res.summary["findings"]]
    assert "noise_floor" in ids and "underfitting" not in ids
    html = (res.run_dir / "report.html").read_text()
    assert 'id="reference"' in html and f"val {ref['val']:.4f}" in html
    off = methodo.run(str(EXAMPLES / "diabetes.yaml"), ["track.mlflow=false", "train.progress=false",
                                                        "evaluate.bootstrap=0", "evaluate.reference=false"],
                      out=tmp_path / "e")
    assert "reference" not in off.summary and "noise_floor" not in [f["id"] for f in off.summary["findings"]]
