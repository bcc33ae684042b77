"""A real run's ``report.html`` opened in headless Chromium: every image decodes, the tables render.

No selenium/playwright: a copy of the report gets a small probe ``<script>`` that, on window load,
writes the images' ``naturalWidth`` and the tables' row counts as JSON into ``<pre id="probe">``;
``chromium --headless --dump-dom`` prints the DOM after load, and the test reads the JSON back.

Chromium comes from Debian's ``chromium`` package (``scripts/ensure-chromium.sh``, run by
``make test``). Without it the tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import methodo

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "digits.yaml"
OVERRIDES = ["train.epochs=2", "track.mlflow=false", "train.progress=false"]
BROWSER_TIMEOUT_S = 60

# Runs on window load (all data: images are decoded or have failed by then).
PROBE = """<pre id="probe"></pre>
<script>
window.addEventListener("load", function () {
  function rows(id) {
    var t = document.getElementById(id);
    if (!t) return null;
    var all = Array.prototype.slice.call(t.rows);
    return {rows: all.length, data_rows: all.filter(function (r) { return r.querySelector("td"); }).length};
  }
  var imgs = Array.prototype.slice.call(document.images);
  document.getElementById("probe").textContent = JSON.stringify({
    images: imgs.map(function (i) {
      return {alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight};
    }),
    tables: {"metrics": rows("metrics"), "class-counts": rows("class-counts")}
  });
});
</script>
"""


def _chromium() -> str | None:
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return exe if os.path.isfile(exe) and os.access(exe, os.X_OK) else None


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = _chromium()
    if exe is None:
        where = os.environ.get("CHROMIUM") or "chromium on PATH or /usr/bin/chromium"
        msg = f"headless Chromium not found ({where}); run scripts/ensure-chromium.sh as root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{msg} (CI=true: the browser check must run in CI)")
        pytest.skip(msg)
    return exe


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """report.html of a real 2-epoch digits run."""
    res = methodo.run(EXAMPLE, overrides=OVERRIDES, out=tmp_path_factory.mktemp("browser") / "run")
    assert res.status == "finished", res.summary.get("failure")
    path = res.run_dir / "report.html"
    assert path.is_file()
    return path


def _with_probe(page: str) -> str:
    cut = page.rfind("</body>")
    assert cut != -1, "report.html has no </body>"
    return page[:cut] + PROBE + page[cut:]


def _probe(chromium: str, page: str, workdir: Path) -> dict:
    """Open ``page`` (HTML text) in headless Chromium and return what the probe script saw."""
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "report-probe.html"
    target.write_text(_with_probe(page), encoding="utf-8")
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--no-default-browser-check",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--mute-audio",
        f"--user-data-dir={workdir / 'profile'}", "--virtual-time-budget=5000",
        "--dump-dom", target.as_uri(),
    ]
    # A throwaway HOME so Chromium writes nothing (crash reports, caches) outside tmp.
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    # Own process group: on timeout, kill Chromium's helper processes too, not just the parent.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT_S} s")
    m = re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)
    assert proc.returncode == 0 and m and m.group(1).strip(), (
        f"no probe result from chromium (exit {proc.returncode}); stderr tail:\n{err[-3000:]}\n"
        f"stdout head:\n{out[:500]}")
    return json.loads(html.unescape(m.group(1)))


def test_report_renders_in_chromium(chromium, report, tmp_path):
    seen = _probe(chromium, report.read_text(encoding="utf-8"), tmp_path)

    images = seen["images"]
    alts = [i["alt"] for i in images]
    assert len(images) >= 3, f"expected learning curves, confusion matrix and ROC; got {alts}"
    for name in ("Learning curves", "Confusion matrix (test)", "ROC curves (test)"):
        assert name in alts, f"no <img alt={name!r}> in the report; got {alts}"
    broken = [i for i in images if not i["complete"] or i["naturalWidth"] <= 0 or i["naturalHeight"] <= 0]
    assert not broken, f"images that did not decode: {broken}"

    metrics, counts = seen["tables"]["metrics"], seen["tables"]["class-counts"]
    assert metrics is not None, "no table#metrics in the report"
    assert metrics["data_rows"] >= 2, f"table#metrics has too few rows: {metrics}"
    assert counts is not None, "no table#class-counts in the report"
    assert counts["data_rows"] >= 1, f"table#class-counts has no rows: {counts}"


def test_probe_catches_a_broken_image(chromium, report, tmp_path):
    """The probe is not vacuous: a report whose 2nd image has a mangled PNG reads naturalWidth 0 there."""
    page = report.read_text(encoding="utf-8")
    starts = [m.start(1) for m in re.finditer(r'src="data:image/png;base64,(iVBORw0KGgo)', page)]
    assert len(starts) >= 2, "expected at least two inlined PNGs in the report"
    i = starts[1]
    broken_page = page[:i] + "QUJDREVGR0hJ" + page[i + len("iVBORw0KGgo") + 1:]  # PNG signature → "ABCDEFGHI"
    seen = _probe(chromium, broken_page, tmp_path)

    widths = [img["naturalWidth"] for img in seen["images"]]
    assert len(widths) == len(starts), widths
    assert widths[1] == 0, f"the mangled image still decoded: {widths}"
    assert all(w > 0 for k, w in enumerate(widths) if k != 1), f"an untouched image failed: {widths}"
