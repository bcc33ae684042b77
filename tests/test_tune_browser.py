"""A real study's ``tune.html`` opened in headless Chromium: every plotly figure draws, the tables render.

As tests/test_report_browser.py: a copy of the page gets a probe ``<script>`` that, on window load, writes
what it sees as JSON into ``<pre id="probe">``; ``chromium --headless --dump-dom`` prints the DOM after load.
The page is self-contained (plotly.js inlined): Chromium runs with networking off. Skipped without
Chromium, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLES, cli_inproc, write_yaml
from test_report_browser import BROWSER_TIMEOUT_S, _chromium

PROBE = """<pre id="probe"></pre>
<script>
window.addEventListener("load", function () {
  var figs = Array.prototype.slice.call(document.querySelectorAll(".plotly-graph-div"));
  function rows(id) {
    var t = document.getElementById(id);
    return t ? Array.prototype.slice.call(t.rows).filter(function (r) { return r.querySelector("td"); }).length : null;
  }
  document.getElementById("probe").textContent = JSON.stringify({
    plotly: typeof Plotly !== "undefined",
    figures: figs.map(function (f) {
      return {svg: f.querySelectorAll("svg.main-svg").length, traces: (f.data || []).length,
              width: f.getBoundingClientRect().width};
    }),
    titles: Array.prototype.slice.call(document.querySelectorAll(".fig h3")).map(function (h) { return h.textContent; }),
    trials: rows("trials"), best: rows("best"), pruned: document.querySelectorAll(".state-PRUNED").length
  });
});
</script>
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = _chromium()
    if exe is None:
        msg = "headless Chromium not found; run scripts/ensure-chromium.sh as root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{msg} (CI=true: the browser check must run in CI)")
        pytest.skip(msg)
    return exe


def _probe(chromium: str, page: str, workdir: Path) -> dict:
    cut = page.rfind("</body>")
    target = workdir / "tune-probe.html"
    target.write_text(page[:cut] + PROBE + page[cut:], encoding="utf-8")
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--disable-extensions", "--mute-audio", "--window-size=1200,900",
           "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # no network: the page must be self-contained
           f"--user-data-dir={workdir / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", target.as_uri()]
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT_S} s")
    m = re.search(r'<pre id="probe">(.*?)</pre>', out, re.S)
    assert proc.returncode == 0 and m and m.group(1).strip(), f"no probe result (exit {proc.returncode}): {err[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


def test_tune_report_draws_every_figure_in_chromium(chromium, capsys, tmp_path):
    space = write_yaml(tmp_path / "space.yaml", "train.optimizer.lr: {float: [1.0e-5, 0.3], log: true}\n"
                       "model.hidden: {choice: [[8], [16]]}\n")
    code, out, err = cli_inproc(capsys, "tune", str(EXAMPLES / "iris.yaml"), "train.epochs=5", "train.threads=1",
                                "track.mlflow=false", "train.progress=false", "train.early_stopping=null",
                                "--space", str(space), "--trials", "10", "--sampler", "random", "--pruner", "median",
                                "--out", str(tmp_path / "t"))
    assert code == 0, err
    page = (tmp_path / "t" / "tune.html").read_text(encoding="utf-8")
    assert "<script src=" not in page  # nothing to fetch: plotly.js and every figure are inlined
    seen = _probe(chromium, page, tmp_path)
    assert seen["plotly"], "plotly.js did not load from the page itself"
    titles = seen["titles"]
    for name in ("Optimization history", "Parameter importances (fANOVA)", "Parallel coordinates", "Slice plots",
                 "Contour plots"):
        assert name in titles, titles
    assert len(seen["figures"]) == len(titles) >= 6
    blank = [(t, f) for t, f in zip(titles, seen["figures"]) if f["svg"] < 1 or f["traces"] < 1 or f["width"] <= 0]
    assert not blank, f"figures that did not draw: {blank}"
    rec = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert seen["trials"] == len(rec["trials"]) == 10 and seen["best"] == 1
    assert seen["pruned"] == rec["counts"]["PRUNED"] > 0
