"""``methodo run CONFIG --nproc N``: the same job as ``torchrun --standalone --nproc-per-node N -m methodo run
CONFIG``, started through torchrun's own entry point (:func:`torch.distributed.run.run`), so the workers,
their environment, the restarts (``--max-restarts``) and the failure handling are torchrun's.

The config is checked here first (bad input is one ``error:`` line before any worker starts), and the run
dir is chosen here, so every attempt of the job (torchrun restarts the whole group when a worker dies)
continues the same one.
"""

from __future__ import annotations

import os
from pathlib import Path

from methodo.errors import BadInput, RunFailed


def torchrun_args(config: str | None, overrides: list[str], *, out: str | None, resume: str | None, nproc: int,
                  max_restarts: int) -> list[str]:
    """torchrun's command line for a one-machine job of ``nproc`` workers running ``methodo run``."""
    job = ["--standalone", f"--nproc-per-node={nproc}", f"--max-restarts={max_restarts}", "-m", "methodo", "run"]
    job += [config] if config is not None else []
    job += list(overrides)
    job += ["--out", str(out)] if out is not None else []
    job += ["--resume", str(resume)] if resume is not None else []
    return job


def launch(config: str | None, overrides: list[str], *, out: str | None, resume: str | None, nproc: int,
           max_restarts: int = 0) -> Path:
    """Run ``methodo run`` on ``nproc`` local processes under torchrun; returns the run dir.

    Raises :class:`BadInput` for a bad config or count (before anything starts) and :class:`RunFailed`
    when a worker failed (after ``max_restarts`` restarts), with the workers' exit codes.
    """
    if nproc < 1:
        raise BadInput(f"--nproc {nproc}: give at least 1 process")
    if max_restarts < 0:
        raise BadInput(f"--max-restarts {max_restarts}: give 0 or more")
    from methodo.config import load_config
    from methodo.rundir import LAYOUT, RunDir
    from methodo.train.distributed import check_batch

    if resume is not None:
        cfg = load_config(RunDir.open(resume, needs="config", flag="--resume").file(LAYOUT["config"]), overrides)
    else:
        cfg = load_config(config, overrides)
        out = str(out if out is not None else RunDir.default_path(cfg.name))
        if Path(out).exists() and any(Path(out).iterdir()):
            RunDir.create(out, name=cfg.name)  # raises the usual message (already a run / not empty)
    check_batch(cfg.train.batch_size, nproc)
    if cfg.data.split.method == "kfold" and cfg.data.split.fold is None:
        raise BadInput("data.split.method: kfold runs its folds one after the other in one process; with --nproc "
                       "run one fold per job (data.split.fold=I)")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # one thread per worker unless the config says otherwise (torchrun's default, without its warning)
    os.environ.setdefault("OMP_NUM_THREADS", str(cfg.train.threads or 1))
    args = parse_args(torchrun_args(config if resume is None else None, overrides, out=out, resume=resume,
                                    nproc=nproc, max_restarts=max_restarts))
    try:
        run(args)
    except ChildFailedError as exc:
        codes = {int(r): f.exitcode for r, f in sorted(exc.failures.items())}
        first = codes.get(0, next(iter(codes.values()), 1))
        err = RunFailed(f"{nproc} processes under torchrun: worker exit codes by rank {codes}"
                        + (f" after {max_restarts} restart(s)" if max_restarts else "")
                        + f"; run dir {out or resume}")
        err.exit_code = first if first in (2, 3, 75, 143) else 1
        raise err from None
    return Path(out or resume)



def main_rank() -> bool:
    """True in a process that is not a torchrun worker, or in rank 0."""
    return os.environ.get("RANK", "0") in ("", "0")
