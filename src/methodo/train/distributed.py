"""Distributed data parallel training (DDP), as launched by ``torchrun``: the process group, each rank's
share of a batch, and the few values the ranks must agree on.

``torchrun --nproc-per-node N -m methodo run CONFIG`` (or ``methodo run CONFIG --nproc N``, which calls
torchrun's own launcher, :func:`torch.distributed.run.run`) starts N processes whose environment holds
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address. Each of them:

1. loads and splits the data exactly as one process would (same seed, same splits, same model init);
2. joins the process group (:func:`session`: ``gloo`` on the CPU, ``nccl`` on GPUs, one GPU per local
   rank) and trains a :class:`~torch.nn.parallel.DistributedDataParallel` copy of the model;
3. draws the same seeded permutation of the training rows every epoch, cuts the same global batches of
   ``train.batch_size`` rows from it as one process would, and keeps every ``world``-th row of each
   (``batch[rank::world]``: what :class:`~torch.utils.data.DistributedSampler` does to the permutation,
   batch by batch, so the union of the ranks' shares is the one-process batch);
4. seeds its dropout and augmentation streams per epoch from ``(seed, epoch, rank)`` (:func:`seed_epoch`);
5. lets DDP average the gradients, and agrees with the other ranks on each step's loss (the global
   batch's, :func:`global_step`: the NaN guard and the divergence guard decide alike everywhere), on
   the epoch's training score and validation metrics (sums reduced across ranks, :func:`all_sum`), and
   on stopping (:func:`any_true`).

Rank 0 alone writes the run dir, the checkpoints and the MLflow run; the other ranks stop after
training. With one process nothing here runs: the loop's per-step work is unchanged.

Examples
--------
>>> from methodo.train.distributed import lr_factor, shard_rows
>>> shard_rows(10, rank=1, world=4)   # the rows of a 10-row batch that rank 1 of 4 trains on
[1, 5, 9]
>>> lr_factor("linear", batch_size=256, world=4)   # the LR was tuned for one process with 64 rows
4.0
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from methodo.errors import BadInput, ConfigError

# How long a rank waits for the others at a collective (the slowest rank's epoch, or rank 0 creating the
# run dir). gloo's own default is 30 minutes; a dead peer is seen at once (its socket closes).
TIMEOUT_MIN = int(os.environ.get("METHODO_DIST_TIMEOUT_MIN", "60"))


@dataclass(frozen=True)
class Dist:
    """This process's place in the group. ``device`` is where collectives run (the rank's GPU with nccl)."""

    rank: int
    world: int
    local_rank: int
    backend: str
    device: Any  # torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def world_size() -> int:
    """Processes in the job, from torchrun's environment (1 when not launched by it)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def shard_rows(n: int, *, rank: int, world: int) -> list[int]:
    """The positions of an ``n``-row batch that ``rank`` of ``world`` trains on (every ``world``-th)."""
    return list(range(rank, n, world))


def check_batch(batch_size: int, world: int) -> None:
    """The global batch splits evenly across the ranks (each rank gets ``batch_size / world`` rows)."""
    if world > 1 and batch_size % world:
        lo, hi = batch_size - batch_size % world, batch_size - batch_size % world + world
        raise ConfigError(f"train.batch_size={batch_size}: the global batch is split across the {world} processes "
                          f"(WORLD_SIZE={world}) and must be a multiple of {world}; use {lo or hi} or {hi}")


def lr_factor(rule: str, *, batch_size: int, world: int, base_batch: int | None = None) -> float:
    """The factor ``train.lr_scaling`` applies to the learning rate.

    ``linear`` (Goyal et al., 2017) multiplies the LR by ``batch_size / base_batch``, ``sqrt`` by its square
    root, ``none`` by 1. ``base_batch`` is the batch the LR was tuned for; by default the per-rank batch
    (``batch_size / world``), so the factor is ``world`` (or its square root): the rule HPC centres
    document for "LR tuned on one GPU, run on N".
    """
    if rule == "none":
        return 1.0
    base = base_batch or max(1, batch_size // max(1, world))
    ratio = batch_size / base
    return ratio if rule == "linear" else math.sqrt(ratio)


# --------------------------------------------------------------------------- the process group


@contextlib.contextmanager
def session(device_name: str):
    """The process group of a torchrun job, for the time of a run; yields a :class:`Dist`, or ``None``
    when there is one process. Joins an existing group (a run inside a run) without leaving it after."""
    world = world_size()
    if world <= 1:
        yield None
        return
    import torch
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        if local >= torch.cuda.device_count():
            raise BadInput(f"LOCAL_RANK={local}: this node has {torch.cuda.device_count()} GPU(s); start at most "
                           f"that many processes per node (--nproc-per-node), or use train.device=cpu")
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    owned = not dist.is_initialized()
    if owned:
        # torchrun's agent keeps one store for every attempt of a job and gives the workers no per-attempt
        # prefix: a restarted rank could read the address a killed rank of the previous attempt left there
        # (a race that hangs gloo's connection set-up). The process group's keys get the attempt's prefix.
        timeout = datetime.timedelta(minutes=TIMEOUT_MIN)
        store, rank_, world_ = next(dist.rendezvous("env://", timeout=timeout))
        store = dist.PrefixStore(f"methodo/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group(backend, store=store, rank=rank_, world_size=world_, timeout=timeout,
                                **({"device_id": torch.device("cuda", local)} if cuda else {}))
    ctx = Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, backend=dist.get_backend(),
               device=torch.device("cuda", local) if cuda else torch.device("cpu"))
    try:
        yield ctx
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def rank0_decides(ctx: Dist | None, decide: Callable[[], Any]) -> Any:
    """``decide()`` run on rank 0 alone and its (picklable) result given to every rank. Bad input found
    by rank 0 is raised on every rank with rank 0's message, so the whole group stops with one reason."""
    if ctx is None:
        return decide()
    import torch.distributed as dist

    box: list[Any] = [None]
    if ctx.main:
        try:
            box[0] = ("ok", decide())
        except BadInput as exc:
            box[0] = ("bad", type(exc).__name__, str(exc))
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    if box[0][0] == "bad":
        from methodo import errors

        raise getattr(errors, box[0][1], BadInput)(box[0][2])
    return box[0][1]


def wrap(model, ctx: Dist):
    """The model in :class:`~torch.nn.parallel.DistributedDataParallel` (weights broadcast from rank 0), with
    the communication hook of :class:`Piggyback` (``net.piggyback``)."""
    from torch.nn.parallel import DistributedDataParallel

    net = DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    net.piggyback = Piggyback(ctx.world)
    net.register_comm_hook(net.piggyback, Piggyback.hook)
    return net


class Piggyback:
    """The step's loss sums ride in DDP's last gradient all-reduce instead of a collective of their own.

    DDP all-reduces the gradients in buckets during ``backward()``; this hook does what DDP's default hook does
    (each bucket divided by the world size, then summed over the ranks) and, when :meth:`carry` gave it values
    for this backward, appends them to the *last* bucket, so the per-step agreement on the global batch's loss
    (:func:`global_step`) costs no extra round trip. ``backward()`` returns once every bucket's future is done,
    so :meth:`take` then has the summed values. When the values could not ride (no synchronizing backward, a
    bucket of another floating type than the values can round-trip), :meth:`take` returns None and
    :func:`global_step` all-reduces them itself."""

    def __init__(self, world: int):
        self.world = world
        self.extra = None  # values to sum in the next synchronizing backward
        self.summed = None  # those values, summed over the ranks

    def carry(self, values) -> None:
        self.extra, self.summed = values, None

    def take(self):
        out, self.extra, self.summed = self.summed, None, None
        return out

    @staticmethod
    def hook(state: "Piggyback", bucket):
        import torch
        import torch.distributed as dist

        buf = bucket.buffer()
        buf.div_(state.world)
        extra = state.extra
        if extra is None or not bucket.is_last() or buf.dtype not in (torch.float32, torch.float64):
            return dist.all_reduce(buf, async_op=True).get_future().then(lambda f: f.value()[0])
        state.extra, n = None, buf.numel()
        flat = torch.cat([buf, extra.to(buf.dtype)])

        def done(fut):
            out = fut.value()[0]
            state.summed = out[n:].to(torch.float64)
            return out[:n]

        return dist.all_reduce(flat, async_op=True).get_future().then(done)


def all_sum(ctx: Dist, values: list[float]) -> list[float]:
    """Each value summed over the ranks (float64, one collective)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def any_true(ctx: Dist, flags: list[bool]) -> list[bool]:
    """For each flag: is it set on any rank? (One collective.)"""
    return [v > 0 for v in all_sum(ctx, [float(bool(f)) for f in flags])]


def step_sums(pending: list[tuple], device):
    """What ranks sum for one optimizer step: each micro-batch's ``loss × rows``, then each one's rows."""
    import torch

    return torch.stack([p[0].detach().to(device, torch.float64) * p[1] for p in pending]
                       + [torch.tensor(float(p[1]), dtype=torch.float64, device=device) for p in pending])


def global_step(ctx: Dist, pending: list[tuple], gnorm, summed=None) -> tuple[list[float], list[tuple]]:
    """The optimizer step's micro-batch losses over the whole global batch, the same on every rank.

    ``pending`` holds this rank's ``(loss tensor, rows, score sum, score count)`` per micro-batch; each
    loss comes back as the row-weighted mean over the ranks, and the rows as the global count (the score
    sums stay this rank's: they are reduced once per epoch). ``summed``: :func:`step_sums` already summed over
    the ranks (carried by DDP's gradient all-reduce, :class:`Piggyback`); otherwise one all-reduce here.
    ``gnorm`` (the norm of the all-reduced gradient, equal on every rank) is appended to the losses when
    given, as the one-process loop does.
    """
    import torch.distributed as dist

    k = len(pending)
    if summed is None:
        summed = step_sums(pending, ctx.device)
        dist.all_reduce(summed)
    sums = summed.tolist()
    losses = [s / r if r else float("nan") for s, r in zip(sums[:k], sums[k:])]
    rows = [(None, int(r), p[2], p[3]) for r, p in zip(sums[k:], pending)]
    return losses + ([gnorm.item()] if gnorm is not None else []), rows


def seed_epoch(ctx: Dist, seed: int, epoch: int, augment=None) -> None:
    """Each rank's random stream for one epoch (dropout through torch's global generator, and the batch
    augmentation's own), a function of ``(seed, epoch, rank)`` like ``DistributedSampler.set_epoch``: the
    ranks draw different masks, and a rank restarted from a checkpoint (which holds rank 0's generators
    only) draws exactly what it would have drawn."""
    import torch

    base = (seed * 1_000_003 + epoch * 7_919 + ctx.rank * 104_729) % 2**63
    torch.manual_seed(base)
    if augment is not None:
        augment.generator.manual_seed((base + 1) % 2**63)


def sync_buffers(ctx: Dist, model) -> None:
    """Every rank takes rank 0's buffers (batch-norm running statistics): DDP broadcasts them before each
    training forward, so after the last one each rank updated its own; validation and the checkpoint
    must see one set."""
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b, src=0)


# --------------------------------------------------------------------------- restarts


def restart_count() -> int:
    """How often this job was restarted: by torchrun (``--max-restarts``) or by a Slurm requeue."""
    n = 0
    for var in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"):
        try:
            n = max(n, int(os.environ.get(var, "0") or 0))
        except ValueError:
            pass
    return n


def _pointer():
    """Where rank 0 notes the run dir it chose when torchrun gave no ``--out`` (one file per torchrun job)."""
    from pathlib import Path

    job = "".join(c if c.isalnum() or c in "-_" else "_" for c in os.environ.get("TORCHELASTIC_RUN_ID", "none"))
    return Path("runs") / f".torchrun-{job}.json"


def restart_target(out, resume, *, name: str) -> tuple[Any, Any]:
    """``(out, resume)`` for this launch (rank 0 decides; :func:`rank0_decides` shares it).

    A job that was restarted (torchrun ``--max-restarts``, or a Slurm requeue) continues the run dir its
    first attempt created: ``--out DIR`` that already holds a run is resumed, and under torchrun without
    ``--out`` the run dir chosen by the first attempt (noted in ``runs/.torchrun-RUN_ID.json``) is.
    """
    import json

    from methodo.rundir import LAYOUT, RunDir

    if resume is not None:
        return None, resume
    if restart_count() > 0:
        if out is not None and (RunDir(out).has(LAYOUT["config"])):
            return None, str(out)
        if out is None and world_size() > 1 and _pointer().is_file():
            prev = json.loads(_pointer().read_text()).get("run_dir")
            if prev and RunDir(prev).has(LAYOUT["config"]):
                return None, prev
            out = prev or out
        return out, None
    if out is None and world_size() > 1:  # the first attempt: choose the run dir and note it for the restarts
        out = str(RunDir.default_path(name))
        p = _pointer()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"run_dir": out}))
        os.replace(tmp, p)
    return out, None
