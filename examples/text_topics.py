"""Write ``text_topics.csv``: real English sentences labeled by the subject they come from.

The sentences are the docstrings of four packages of the Python standard library, one subject each:
``email`` (mail messages), ``unittest`` (testing), ``asyncio`` (concurrency) and ``http`` (the web
protocol). Every sentence of 30 to 300 characters is kept once; each class keeps at most ``--per-class``
of them, drawn with a fixed seed. Nothing is downloaded: the text ships with CPython (the exact
sentences differ a little between Python versions).

    python examples/text_topics.py --out text_topics.csv [--per-class 150]
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import pkgutil
import random
import re

SUBJECTS = {"email": "email", "unittest": "unittest", "asyncio": "asyncio", "http": "http"}


def sentences(package: str) -> list[str]:
    """Every docstring sentence of ``package`` and its submodules (30-300 characters, once each)."""
    pkg = importlib.import_module(package)
    mods = [pkg]
    for m in pkgutil.walk_packages(pkg.__path__, package + "."):
        if "test" in m.name.split(".")[1:] or m.name.endswith("__main__"):
            continue
        try:
            mods.append(importlib.import_module(m.name))
        except ImportError:  # a platform's own module (asyncio.windows_events on Linux)
            continue
    docs = []
    for mod in mods:
        docs.append(inspect.getdoc(mod) or "")
        for _, obj in sorted(vars(mod).items()):
            if getattr(obj, "__module__", None) == mod.__name__:
                docs.append(inspect.getdoc(obj) or "")
                for _, member in sorted(vars(obj).items()) if inspect.isclass(obj) else ():
                    docs.append(inspect.getdoc(member) or "" if inspect.isfunction(member) else "")
    out, seen = [], set()
    for doc in docs:
        for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
            if 30 <= len(s) <= 300 and s not in seen and not s.startswith((">>>", "...")):
                seen.add(s)
                out.append(s)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="text_topics.csv")
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    rows = []
    for label, package in SUBJECTS.items():
        found = sorted(sentences(package))
        rng.shuffle(found)
        rows += [(s, label) for s in found[:args.per_class]]
    rng.shuffle(rows)
    with open(args.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    counts = {k: sum(1 for _, lab in rows if lab == k) for k in SUBJECTS}
    print(f"{args.out}: {len(rows)} sentences, " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
