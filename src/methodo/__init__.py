"""methodo: a deep-learning methodology toolkit for PyTorch.

>>> import methodo
>>> result = methodo.run("examples/digits.yaml", overrides=["train.epochs=3"])  # doctest: +SKIP
>>> model = methodo.load(result.run_dir)                                        # doctest: +SKIP
>>> model.predict(X)                                                            # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["run", "load", "load_config", "__version__"]


def run(config, overrides=(), *, out=None, resume=None):
    """Run the whole pipeline; see :func:`methodo.pipeline.run`."""
    from methodo.pipeline import run as _run

    return _run(config, overrides, out=out, resume=resume)


def load_config(path, overrides=()):
    """Read and validate a config; see :func:`methodo.config.load_config`."""
    from methodo.config import load_config as _load

    return _load(path, overrides)


def load(run_dir, *, device="cpu"):
    """The trained model of a run dir with its own preprocessing: ``.predict(X)``, ``.predict_proba(X)``,
    ``.evaluate(X, y)``; see :class:`methodo.use.predictor.Predictor`."""
    from methodo.use.predictor import load as _load

    return _load(run_dir, device=device)
