"""The package's module-level imports form no cycle, and `methodo --help` imports nothing heavy.

A cycle (a imports b at load time, b imports a) makes the import order matter and breaks in surprising
ways when a module is imported first from somewhere new. Imports inside functions are lazy and allowed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import methodo

SRC = Path(methodo.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _load_time_imports(path: Path, name: str, known: set[str]) -> set[str]:
    """methodo modules imported at module level (not inside a function or under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        for sub in ([node] if not isinstance(node, (ast.If, ast.Try)) else ast.walk(node)):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - sub.level + 1] + ([base] if base else []))
                # `from P import m` loads the module P.m; `from P import name` needs P itself
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in sub.names}
    return {m for m in found if m in known and m != name}


def test_no_import_cycle_at_load_time():
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {name: _load_time_imports(p, name, set(files)) for name, p in files.items()}
    cycles, state = [], {}

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles at load time: " + "; ".join(" -> ".join(c) for c in cycles)


def test_cli_import_is_light():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import methodo.cli"], capture_output=True,
                         text=True, timeout=60).stderr
    heavy = {line.rsplit("|", 1)[-1].strip() for line in out.splitlines() if "|" in line}
    assert not heavy & {"torch", "numpy", "mlflow", "sklearn", "pydantic", "matplotlib"}
