"""The run dir: one type owns its creation, its layout, and every read and write inside it.

Every command that reads or writes a run dir (``run``, ``--resume``, ``lr-find``, ``embed``, ``report``,
k-fold, and the next ones) goes through :class:`RunDir`:

- **exclusive creation**: :meth:`RunDir.create` claims the folder by creating its marker file with
  ``O_CREAT | O_EXCL``, so two processes given the same ``--out`` can never both get it; a folder that
  already holds a run, or holds anything that is not a methodo run dir, is refused (nothing of the
  user's is overwritten);
- **layout**: the names of the files live here (:data:`LAYOUT`) and nowhere else;
- **atomic writes**: a file is written to a temporary name in the same folder, then renamed over;
- **path guards**: every name is checked by :func:`~methodo.paths.safe_child` — ``..``, absolute
  paths, encoded escapes and symlinks that lead outside the run dir are refused, for reads too
  (a ``figures/roc.png`` linking to ``/etc/passwd`` is never read).

Examples
--------
>>> import tempfile, pathlib
>>> from methodo.rundir import RunDir
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> rd = RunDir.create(root / "r", name="demo")
>>> rd.write_json("summary.json", {"status": "running"})
>>> rd.read_json("summary.json")
{'status': 'running'}
>>> RunDir.create(root / "r", name="demo")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
methodo.errors.BadInput: --out .../r: already holds a run; choose another folder or use --resume .../r
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Iterable

from methodo.errors import BadInput
from methodo.paths import safe_child

MARKER = ".methodo-run"  # created exclusively: whoever creates it owns the run dir
LAYOUT = {
    "config": "config.yaml",  # the resolved config, defaults included
    "summary": "summary.json",  # the run record (methodo.record.RunRecord)
    "report": "report.html",
    "metrics": "metrics.csv",  # one row per epoch
    "steps": "steps.csv",  # one row per optimizer step
    "monitor": "monitor.json",  # per-epoch weight/gradient statistics
    "preprocessor": "preprocessor.json",  # scaling fitted on the training split
    "features": "features.skops",  # the fitted feature pipeline (tables)
    "lr_find": "lr_find.json",
    "splits": "splits.csv",  # every row of the dataset and its split (train, val, test)
    "predictions_val": "predictions_val.csv",  # one row per validation row (the task's columns)
    "predictions_test": "predictions_test.csv",  # one row per test row (the same columns)
    "label_issues": "label_issues.csv",  # rows whose label looks wrong (confident learning), most suspect first
    "label_scores": "label_scores.csv",  # what the label-issue search read: each searched row's out-of-sample scores
    "inputs": "inputs.json",  # what the model takes and gives: columns, image channels and size, classes, the model
    "drift": "drift.json",  # statistics of the training split that new data is compared with (methodo evaluate)
    "card": "MODEL_CARD.md",  # the model card (Hugging Face layout)
    "figures": "figures",
    "checkpoints": "checkpoints",
    "folds": "folds",  # k-fold: one run dir per fold
    "adapter": "adapter",  # transfer.strategy lora: the adapter alone (PEFT's adapter_config.json + safetensors)
    "merged": "checkpoints/merged.safetensors",  # `methodo merge`: the adapter folded into the weights
}
_RUN_FILES = (MARKER, LAYOUT["config"], LAYOUT["summary"])  # any of these: the folder holds a run
MAX_READ = 256 * 1024 * 1024  # bytes: a run-dir file larger than this is not one methodo wrote


class RunDir:
    """A run dir on disk. ``RunDir(path)`` does no I/O; :meth:`create` and :meth:`open` check the disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ creating and opening

    @staticmethod
    def default_path(name: str, kind: str = "") -> Path:
        """``runs/NAME[-KIND]-YYYYmmdd-HHMMSS-XXXX``: the place a run goes without ``--out``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{name}{'-' + kind if kind else ''}-{stamp}-{secrets.token_hex(2)}"

    @classmethod
    def create(cls, out: str | Path | None, *, name: str, kind: str = "", flag: str = "--out",
               folders: tuple[str, ...] = ("figures", "checkpoints")) -> "RunDir":
        """Create and claim a new run dir (``out``, or a fresh name under ``runs/``) with the layout's
        ``folders`` (an evaluation or an export has no checkpoints).

        Refused with :class:`BadInput`: a folder holding a run (or being claimed by another process
        right now), a non-empty folder that is not a run dir, a path that is a file, an unwritable place.
        """
        path = Path(out) if out is not None else cls.default_path(name, kind)
        shown = str(out) if out is not None else str(path)
        if str(out) == "":
            raise BadInput(f"{flag} '': give a folder name (methodo does not write runs into the current folder)")
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise BadInput(f"{flag} {shown}: exists and is not a folder")
            if any((path / f).exists() for f in _RUN_FILES):
                raise BadInput(f"{flag} {shown}: already holds a run; choose another folder or use --resume {shown}")
            if any(path.iterdir()):
                raise BadInput(f"{flag} {shown}: folder is not empty and is not a methodo run dir; "
                               "choose a new or empty folder (methodo never writes over your files)")
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another process claimed it between our check and our claim
            raise BadInput(f"{flag} {shown}: already holds a run; choose another folder or use --resume {shown}") \
                from None
        except OSError as exc:
            raise BadInput(f"{flag} {shown}: cannot write there ({exc.strerror or exc})") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}) + "\n")
        rd = cls(path)
        try:
            rd.make_layout(folders)
        except OSError as exc:
            raise BadInput(f"{flag} {shown}: cannot write there ({exc.strerror or exc})") from None
        return rd

    @classmethod
    def open(cls, path: str | Path, *, needs: str = "config", flag: str = "") -> "RunDir":
        """An existing run dir that holds ``LAYOUT[needs]`` as a regular file inside it."""
        path = Path(path)
        where = f"{flag} {path}" if flag else str(path)
        if not path.is_dir():
            raise BadInput(f"{where}: not a run dir (no such folder)")
        rd = cls(path)
        if not rd.has(LAYOUT[needs]):
            raise BadInput(f"{where}: not a run dir (no {LAYOUT[needs]})")
        return rd

    def check_integrity(self, *, what: str = "it") -> None:
        """Before writing into an existing run dir: no symbolic link anywhere in it, and each name of the
        layout of its kind (a file where a file belongs, a folder where a folder does). ``what`` says what
        is refused (e.g. "it cannot be resumed")."""
        folders = {LAYOUT[k] for k in ("figures", "checkpoints", "folds")}
        for dirpath, dirs, files in os.walk(self.path):
            for name in dirs + files:
                p = Path(dirpath) / name
                if p.is_symlink():
                    raise BadInput(f"{p}: is a symbolic link; a run dir holds only the files methodo wrote, so "
                                   f"{what} (remove the link)")
        for name in LAYOUT.values():
            p = self.path / name
            if p.exists() and p.is_dir() != (name in folders):
                raise BadInput(f"{p}: is a {'folder' if p.is_dir() else 'file'} where the run dir has a "
                               f"{'folder' if name in folders else 'file'}; {what}")
        for sub in ("figures", "checkpoints"):  # these hold files only (figures, checkpoints)
            d = self.path / LAYOUT[sub]
            for p in sorted(d.iterdir()) if d.is_dir() else ():
                if not p.is_file():
                    raise BadInput(f"{p}: is not a file; the run dir's {LAYOUT[sub]}/ holds files only, so {what}")

    def make_layout(self, folders: tuple[str, ...] = ("figures", "checkpoints")) -> None:
        """The folders of the layout (``figures/``, ``checkpoints/``); existing ones are kept."""
        for sub in folders:
            d = self.file(LAYOUT[sub])
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                raise BadInput(f"{d}: expected a folder of the run dir")
            d.mkdir(exist_ok=True)

    # ------------------------------------------------------------------ paths

    def file(self, name: str) -> Path:
        """The path of ``name`` inside the run dir; names that would escape it are refused."""
        return safe_child(self.path, name)

    def figure(self, name: str) -> Path:
        return self.file(f"{LAYOUT['figures']}/{name}")

    @property
    def checkpoints(self) -> Path:
        return self.file(LAYOUT["checkpoints"])

    @property
    def figures(self) -> Path:
        return self.file(LAYOUT["figures"])

    def has(self, name: str) -> bool:
        """True when ``name`` is a regular file inside the run dir (links leading outside are refused)."""
        try:
            return self.file(name).is_file()
        except BadInput:
            return False

    def fold(self, i: int) -> Path:
        return self.file(f"{LAYOUT['folds']}/fold-{i}")

    # ------------------------------------------------------------------ reading (guarded)

    def read_bytes(self, name: str, *, limit: int = MAX_READ) -> bytes:
        p = self.file(name)
        if p.is_symlink():  # even one pointing inside: methodo never writes links, so someone else did
            raise BadInput(f"{p}: is a symbolic link; methodo reads only the files it wrote in the run dir")
        if not p.is_file():
            raise BadInput(f"{p}: not a file")
        size = p.stat().st_size
        if size > limit:
            raise BadInput(f"{p}: {size} bytes, more than the {limit} a run-dir file may hold")
        return p.read_bytes()

    def read_text(self, name: str, *, limit: int = MAX_READ) -> str:
        try:
            return self.read_bytes(name, limit=limit).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{self.file(name)}: not UTF-8 text (byte {exc.start})") from None

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read_text(name))
        except json.JSONDecodeError as exc:
            raise BadInput(f"{self.file(name)}: not valid JSON ({exc.msg}, line {exc.lineno})") from None

    def read_record(self):
        """The run record from ``summary.json``, validated (:meth:`methodo.record.RunRecord.read`)."""
        from methodo.record import RunRecord

        return RunRecord.read(self.file(LAYOUT["summary"]), self.read_text(LAYOUT["summary"]))

    # ------------------------------------------------------------------ writing (atomic)

    def write_bytes(self, name: str, data: bytes) -> Path:
        p = self.file(name)
        if p.is_dir() and not p.is_symlink():
            raise BadInput(f"{p}: is a folder where methodo writes a file; the run dir is damaged")
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
        return p

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(obj, indent=2, default=str))

    def write_csv(self, name: str, header: list[str], rows: Iterable[Iterable[Any]]) -> Path:
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(header)
        w.writerows(rows)
        return self.write_text(name, buf.getvalue())

    def write_record(self, record) -> Path:
        return self.write_text(LAYOUT["summary"], record.to_json())
