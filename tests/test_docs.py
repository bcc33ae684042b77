"""Every command shown in README.md and docs/*.md runs, and does what the page says.

Conventions for whoever writes the docs (this is what the test relies on):

- Commands live in fenced blocks labelled ``bash``, ``sh`` or ``console``. In a ``bash``/``sh``
  block every line that is not blank or a ``#`` comment is a command. In a ``console`` block a
  command starts with ``$ ``; the lines after it, up to the next ``$ ``, are its output. An
  unlabelled block may not hold ``$ `` lines (label it ``console``); a usage synopsis with
  placeholders (``methodo run CONFIG``) goes in a ``text`` block, or in prose.
- In README.md, the inline commands of tables (`` `methodo ...` `` in a ``|`` row) are run too.
- A block that cannot run here is marked on the line just before it with
  ``<!-- needs: REASON -->`` (network, a GPU, a server, ...); the test reports it as
  skipped with that reason. Use it rarely: prefer a fast version of the command (``train.epochs=2``,
  ``track.mlflow=false``), shown as is. A block that runs but takes minutes is marked
  ``<!-- slow: REASON -->``: it is skipped by ``make test`` and run, with its whole page, by
  ``make test-slow`` (``pytest -m slow``).
- All pages run in ONE temporary working directory holding a copy of ``examples/``, page by page
  in the order of PAGES, blocks in page order, so a later command can use an earlier command's
  files. Give runs an explicit ``--out runs/NAME`` to refer to them later; a page refers only to
  run dirs it creates itself (an identical command on another page is not rerun: results are
  cached by command text, so repeating a command costs nothing). Two different commands may not
  share an ``--out``.
- Exit code: 0, unless the shown output has a line starting with ``error:`` (2) or ``failed:``
  (3). ``$ echo $?`` checks the exit code of the command before it.
- Output: the first shown output line that is not ``...`` must appear in the real output
  (stdout + stderr), with every number treated as "some number" and ``...`` as "anything", so
  measured numbers in the docs do not have to be re-measured on each machine.
- ``methodo ...`` commands run in this process (no second torch start-up); ``python ...`` and
  anything using shell syntax run under bash with ``methodo`` and ``python`` on PATH. Both run
  with one CPU thread (torch, OpenMP, BLAS): on a shared machine, thread oversubscription, not
  work, is what makes small runs slow. Only the last digits of some numbers change, and numbers
  are not compared.
- Set-up commands are checked, not run: ``make TARGET`` (the target exists in the Makefile),
  ``bash .ci/run`` (it calls ``make test``), ``pip install`` (skipped: it installs packages).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
RUN_LANGS = {"bash", "sh", "console"}
NEEDS = re.compile(r"<!--\s*needs:\s*(.+?)\s*-->")
SLOW = re.compile(r"<!--\s*slow:\s*(.+?)\s*-->")  # runs, but only with the slow checks (`make test-slow`)
PLACEHOLDER = re.compile(r"(?:^|(?<=[\s=\[]))[A-Z][A-Z_]{2,}(?=$|[\s\]])")  # a word CONFIG, RUN_DIR, MODEL_PATH, ...


@dataclass
class Step:
    cmd: str
    output: list[str] = field(default_factory=list)
    line: int = 0


@dataclass
class Block:
    page: str
    line: int
    lang: str
    steps: list[Step]
    needs: str | None = None
    slow: str | None = None


# --------------------------------------------------------------------------- extraction


def _strip_comment(cmd: str) -> str:
    try:
        return " ".join(shlex.quote(t) if " " in t or not t else t for t in shlex.split(cmd, comments=True))
    except ValueError:
        return cmd.strip()


def extract(page: str, text: str) -> list[Block]:
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^```\s*([\w+-]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1).lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        body = lines[i + 1:j]
        prev = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        needs, slow = NEEDS.search(prev), SLOW.search(prev)
        if lang in RUN_LANGS:
            blocks.append(Block(page, start + 1, lang, _steps(lang, body, start + 2), needs and needs.group(1),
                                slow and slow.group(1)))
        elif not lang and any(b.startswith("$ ") for b in body):
            raise AssertionError(f"{page} line {start + 1}: a block with `$ ` commands must be labelled ```console")
        i = j + 1
    if page == "README.md":  # the capability table: each row's inline command
        steps = [Step(c, [], n + 1) for n, line in enumerate(lines) if line.startswith("|")
                 for c in re.findall(r"`(methodo [^`]+)`", line) if not PLACEHOLDER.search(c)]
        if steps:
            blocks.append(Block(page, steps[0].line, "table", steps))
    return blocks


def _steps(lang: str, body: list[str], first_line: int) -> list[Step]:
    steps: list[Step] = []
    pending = False  # the previous command line ended with a backslash
    for n, raw in enumerate(body):
        text = raw.strip()
        if pending:
            steps[-1].cmd += " " + text.rstrip("\\").strip()
        elif lang == "console" and raw.startswith("$ "):
            steps.append(Step(raw[2:].rstrip("\\").strip(), [], first_line + n))
        elif lang == "console":
            if steps and text:
                steps[-1].output.append(raw)
            continue
        elif text and not text.startswith("#"):
            steps.append(Step(text.rstrip("\\").strip(), [], first_line + n))
        else:
            continue
        pending = text.endswith("\\")
    return steps


def all_blocks() -> list[Block]:
    return [b for p in PAGES for b in extract(p, (ROOT / p).read_text(encoding="utf-8"))]


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    code: int
    out: str
    seconds: float


class Workspace:
    """One working directory for every page, and the results of the commands already run there."""

    def __init__(self, path: Path):
        self.path = path
        shutil.copytree(ROOT / "examples", path / "examples")
        self.bin = path / ".bin"
        self.bin.mkdir()
        (self.bin / "methodo").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m methodo "$@"\n')
        (self.bin / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        for f in self.bin.iterdir():
            f.chmod(0o755)
        self.cache: dict[str, Result] = {}
        self.outs: dict[str, str] = {}  # --out DIR -> the command that made it
        self.last_code = 0
        self.times: list[tuple[str, float]] = []

    def run(self, cmd: str) -> Result:
        key = _strip_comment(cmd)
        if key in self.cache:
            return self.cache[key]
        tokens = shlex.split(cmd, comments=True)
        out_dir = next((tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--out"), None)
        if out_dir and out_dir in self.outs:
            raise AssertionError(f"--out {out_dir} is used by two different commands ({self.outs[out_dir]!r} and "
                                 f"{key!r}): give each its own run dir")
        t0 = time.perf_counter()
        if tokens and tokens[0] == "methodo" and not re.search(r"[|&;<>`$(){}]", cmd.split("#")[0]):
            code, out = self._in_process(tokens[1:])
        else:
            code, out = self._shell(cmd)
        res = Result(code, out, time.perf_counter() - t0)
        self.cache[key] = res
        if out_dir:
            self.outs[out_dir] = key
        self.times.append((key, res.seconds))
        return res

    def _in_process(self, argv: list[str]) -> tuple[int, str]:
        import torch
        from threadpoolctl import threadpool_limits

        from methodo.cli import main

        buf = io.StringIO()
        old, threads = Path.cwd(), torch.get_num_threads()
        os.chdir(self.path)
        torch.set_num_threads(1)
        try:
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), threadpool_limits(1):
                try:
                    code = main(argv)
                except SystemExit as exc:  # argparse: --help, usage errors
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except Exception:  # what the real command would show: a traceback, exit 1
                    traceback.print_exc(file=buf)
                    code = 1
        finally:
            os.chdir(old)
            torch.set_num_threads(threads)
        return code, buf.getvalue()

    def _shell(self, cmd: str) -> tuple[int, str]:
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.run(["bash", "-c", cmd], cwd=self.path, env=env, capture_output=True, text=True,
                           timeout=600)
        return p.returncode, p.stdout + p.stderr


def _pattern(expected: str) -> re.Pattern:
    """A shown output line as a regex: any number matches any number, `...` matches anything."""
    parts = re.split(r"(\.\.\.|[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)", expected.strip())
    rx = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            rx += r"\s+".join(re.escape(w) for w in part.split(" ")) if part else ""
        elif part == "...":
            rx += ".*"
        else:
            rx += r"[-+]?(?:\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|inf)"
    return re.compile(rx)


def _expected_code(output: list[str]) -> int:
    if any(line.startswith("error:") for line in output):
        return 2
    if any(line.startswith("failed:") for line in output):
        return 3
    return 0


def _setup_command(cmd: str) -> str | None:
    """Set-up commands are checked, not run. Returns a skip reason, or None when the command must run."""
    tokens = shlex.split(cmd, comments=True)
    if tokens[:1] == ["make"]:
        makefile = (ROOT / "Makefile").read_text()
        for target in tokens[1:] or ["run"]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"`{cmd}`: no target {target!r} in Makefile"
        return "checked: the Makefile target exists"
    if tokens[:2] == ["bash", ".ci/run"]:
        assert "make test" in (ROOT / ".ci" / "run").read_text(), ".ci/run must call `make test`"
        return "checked: .ci/run calls make test"
    if "pip" in tokens[:3] and "install" in tokens:
        return "installs packages: not run"
    return None


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("docs"))
    yield ws
    slow = sorted(ws.times, key=lambda t: -t[1])[:8]
    print("\ndocs commands: %d run, %.0f s in all; slowest:" % (len(ws.times), sum(t for _, t in ws.times)))
    for cmd, t in slow:
        print(f"  {t:6.1f} s  {cmd}")


def _marked_blocks() -> list[tuple[str, int, str]]:
    try:
        return [(b.page, b.line, b.needs or f"{b.slow} (a slow check: `make test-slow` runs it)")
                for b in all_blocks() if b.needs or b.slow]
    except AssertionError:  # a malformed page: its own test says why
        return []


@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_page_runs(page, workspace):
    blocks = [b for b in extract(page, (ROOT / page).read_text(encoding="utf-8")) if not (b.needs or b.slow)]
    assert _run_page(page, workspace, slow=False) == sum(len(b.steps) for b in blocks)  # none dropped


def _slow_pages() -> list[str]:
    try:
        return [p for p in PAGES if any(b.slow for b in extract(p, (ROOT / p).read_text(encoding="utf-8")))]
    except AssertionError:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("page", _slow_pages())
def test_every_command_of_the_page_runs_with_its_slow_blocks(page, tmp_path):
    """`make test-slow`: the page again, in a fresh workspace, with its `<!-- slow: ... -->` blocks too."""
    blocks = [b for b in extract(page, (ROOT / page).read_text(encoding="utf-8")) if not b.needs]
    assert any(b.slow for b in blocks)
    assert _run_page(page, Workspace(tmp_path), slow=True) == sum(len(b.steps) for b in blocks)


def _run_page(page: str, workspace, *, slow: bool) -> int:
    """Run (or check) every step of the page's runnable blocks in order; returns how many were handled."""
    handled = 0
    for block in extract(page, (ROOT / page).read_text(encoding="utf-8")):
        if block.needs or (block.slow and not slow):  # reported by test_blocks_marked_as_needing_something
            continue
        for step in block.steps:
            handled += 1
            here = f"{page} line {step.line}: `{step.cmd}`"
            if step.cmd.startswith("echo $?"):
                shown = [o for o in step.output if o.strip()]
                assert shown and int(shown[0]) == workspace.last_code, f"{here}: exit code was {workspace.last_code}"
                continue
            placeholder = PLACEHOLDER.search(step.cmd.split("#")[0])
            assert not placeholder, (f"{here}: {placeholder.group(0)} looks like a placeholder; show a real "
                                     "command, or put a usage synopsis in a ```text block")
            reason = _setup_command(step.cmd)
            if reason:
                continue
            res = workspace.run(step.cmd)
            workspace.last_code = res.code
            want = _expected_code(step.output)
            tail = "\n".join(res.out.splitlines()[-15:])
            assert res.code == want, f"{here}: exit code {res.code}, the page implies {want}; output:\n{tail}"
            shown = next((o for o in step.output if o.strip() and o.strip() != "..."), None)
            if shown:
                assert _pattern(shown).search(res.out), (f"{here}: the page shows\n  {shown.strip()}\nbut the "
                                                         f"output has no such line:\n{tail}")
    return handled


@pytest.mark.parametrize("page, line, reason", _marked_blocks())
def test_blocks_marked_as_needing_something(page, line, reason):
    marker = (ROOT / page).read_text(encoding="utf-8").splitlines()[:line - 1]
    assert reason.strip() and re.search(r"<!--\s*(needs|slow):", next(m for m in reversed(marker) if m.strip()))
    pytest.skip(f"{page} line {line}: needs {reason}")


# --------------------------------------------------------------------------- the landing page


def test_readme_starts_with_the_two_commands_a_newcomer_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; it is a landing page, move details to docs/"
    first = extract("README.md", text)[0]
    assert [s.cmd.split("#")[0].strip() for s in first.steps] == ["make run", "make test"]
    assert text.index("```bash") < text.index("\n## "), "the two commands come before any section"
    makefile = (ROOT / "Makefile").read_text()
    recipe = lambda t: re.search(rf"^{t}:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)  # noqa: E731
    assert "methodo run examples/digits.yaml" in recipe("run")
    assert "pytest" in recipe("test")
    assert re.search(r"^exec .*make test$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert "<!-- from" not in text, "README holds no copies of docs/ pages: link to them"


def test_links_between_pages_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / page).read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            assert ((ROOT / page).parent / target).exists(), f"{page}: link to {target} does not resolve"


def test_extraction_rules():
    page = ("```bash\nmake run    # set up\n# a comment\nmethodo list models\n```\n<!-- needs: network -->\n"
            "```console\n$ methodo data inspect x.yaml\nerror: x.yaml: config file not found\n$ echo $?\n2\n```\n"
            "```text\nmethodo run CONFIG\n```\n| a | `methodo list splits` |\n")
    blocks = extract("README.md", page)
    assert [s.cmd for s in blocks[0].steps] == ["make run    # set up", "methodo list models"]
    assert blocks[1].needs == "network" and blocks[1].steps[0].output == ["error: x.yaml: config file not found"]
    assert _expected_code(blocks[1].steps[0].output) == 2 and blocks[1].steps[1].output == ["2"]
    assert [s.cmd for s in blocks[2].steps] == ["methodo list splits"]
    assert _pattern("status: finished  epochs run: 17 (best epoch 9) ...").search(
        "status: finished  epochs run: 12 (best epoch 4)  duration: 3.1 s")
    assert not _pattern("findings: 0 (no problem found)").search("findings: 2")
    assert PLACEHOLDER.search("methodo embed RUN_DIR --method pca") and PLACEHOLDER.search("x --out FILE")
    assert not PLACEHOLDER.search("methodo evaluate-lm m --perplexity $(python -c 'x')/LICENSE.txt --window 64")
    with pytest.raises(AssertionError, match="labelled ```console"):
        extract("x.md", "```\n$ methodo list models\n```\n")
