"""A lab as a Jupyter notebook (nbformat v4): markdown explaining each step above a code cell calling that
step, the same functions `methodo lab NAME` runs, in the same order; the last cell draws the conclusion and
writes ``lab.json``, so the notebook's numbers are the command's."""

from __future__ import annotations

import inspect
from pathlib import Path

from methodo.errors import BadInput
from methodo.labs import Lab


def _doc(fn) -> str:
    return inspect.cleandoc(fn.__doc__ or f"Step `{fn.__name__}`.")


def build_notebook(lab: Lab, *, seed: int = 0, out: str = "lab"):
    """The notebook of ``lab`` (an ``nbformat.NotebookNode``) writing its outputs to ``out`` (relative to the
    notebook's folder when it runs)."""
    from nbformat import v4 as nbf

    module = lab.module.rsplit(".", 1)[-1]
    cells = [nbf.new_markdown_cell(
        f"# Lab `{lab.name}`: {lab.title}\n\n**Claim.** {lab.claim}\n\n{lab.intro}\n\n"
        f"This notebook runs the same steps as `methodo lab {lab.name} --seed {seed}`, one cell each, with "
        "methodo's public API; each step records what it measured in `ctx.numbers` and saves its figures "
        f"under `{out}/figures/`. The last cell draws the conclusion from the numbers and writes `{out}/lab.json`."),
        nbf.new_code_cell(
            "import json\n\nimport matplotlib\nmatplotlib.use('Agg')  # figures are saved, then shown as images\n\n"
            f"from methodo.labs import start\nfrom methodo.labs import {module} as lab\n\n"
            f"ctx = start({lab.name!r}, seed={seed}, out={out!r}, notebook=True)")]
    for i, step in enumerate(lab.steps, 1):
        cells.append(nbf.new_markdown_cell(f"## Step {i}: `{step.__name__}`\n\n{_doc(step)}"))
        cells.append(nbf.new_code_cell(f"lab.{step.__name__}(ctx)"))
    cells.append(nbf.new_markdown_cell(
        "## Conclusion\n\nThe conclusion is written from the measured numbers, and `conclusion_holds` is the "
        "conjunction of explicit checks on them (a claim that only held by luck would fail on another seed)."))
    cells.append(nbf.new_code_cell(
        "result = ctx.finish()\nprint(result.conclusion)\nprint('conclusion_holds:', result.conclusion_holds, "
        "result.checks)\nprint(json.dumps(result.numbers, sort_keys=True))"))
    nb = nbf.new_notebook(cells=cells)
    nb.metadata.update({"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                        "language_info": {"name": "python"}, "methodo": {"lab": lab.name, "seed": seed, "out": out}})
    return nb


def write_notebook(lab: Lab, path: str | Path, *, seed: int = 0, out: str | None = None) -> Path:
    """Write the notebook of ``lab`` to ``path`` (a new ``.ipynb`` file; an existing file is never replaced)."""
    try:
        import nbformat
    except ImportError:
        raise BadInput("--notebook needs nbformat: pip install 'methodo[lab]'") from None

    path = Path(path)
    if path.suffix != ".ipynb":
        raise BadInput(f"--notebook {path}: give a file name ending in .ipynb")
    if path.exists() or path.is_symlink():
        raise BadInput(f"--notebook {path}: exists; methodo never writes over your files (choose another name)")
    if not path.parent.is_dir():
        raise BadInput(f"--notebook {path}: folder {path.parent} does not exist")
    nb = build_notebook(lab, seed=seed, out=str(out) if out is not None else f"{path.stem}_lab")
    nbformat.validate(nb)
    with open(path, "x", encoding="utf-8") as f:
        nbformat.write(nb, f)
    return path
