"""Does methodo's DDP scale, and what does it cost over a hand-written DDP loop?

CPU, gloo, one thread per process, on a compute-bound model (methodo's ``cnn``: conv-BN-ReLU stages, whose
convolutions dominate the step, on scikit-learn digits through methodo's data stage), same seed, optimizer,
global batch and epochs for every variant:

  (a) methodo   ``methodo.train.loop.fit``, 1 process × 1 thread
  (b) methodo   ``fit(..., dist=...)``, 2 gloo processes × 1 thread (each rank half of every global batch)
  (c) by hand   1 process × 1 thread: batches cut from one permutation by tensor indexing
  (d) by hand   2 gloo processes × 1 thread: ``DistributedDataParallel``, each rank ``batch[rank::2]``

Each run trains for ``--epochs`` epochs with one validation pass per epoch; the time reported is the
whole training divided by the optimizer steps (ms per step). Multi-process variants are started by torchrun's
launcher API (``torch.distributed.launcher.api.elastic_launch``); the ranks meet at a barrier before the
clock starts and rank 0's time is kept. Scaling efficiency = t(1 process) / (2 × t(2 processes)) (1.0: two
processes halve the time); the overhead is (b) / (d). Targets: efficiency ≥ 0.8, overhead ≤ 1.10×.

``--gpu``: bf16 autocast + channels_last + ``torch.compile`` on 1 GPU, and DDP over nccl on 2 GPUs when
there are 2, images per second of a ResNet on 32×32 inputs; skipped, saying why, without a CUDA device.

This is a benchmark, not a test: run it by hand.

    python bench/ddp.py [--epochs N] [--rounds R] [--batch-size B] [--gpu] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from _common import MAX_LOAD, ROOT, code_version, cpu_and_nproc, load_too_high, loadavg, replace_section  # bench/ is sys.path[0]

SECTION = "## Distributed"
EFFICIENCY_TARGET, OVERHEAD_TARGET = 0.8, 1.10
VARIANTS = {
    "a": "(a) methodo `fit`, 1 process × 1 thread",
    "b": "(b) methodo `fit` DDP, 2 gloo processes × 1 thread",
    "c": "(c) hand-written loop, 1 process × 1 thread",
    "d": "(d) hand-written DDP loop, 2 gloo processes × 1 thread",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="epochs per training run (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, each runs a, b, c, d (default 3)")
    # Compute-bound by default: at width 32 and 64 rows per process a step takes ~9 ms, and gloo's fixed cost per
    # all-reduce dominates (measured idle 2026-12-02: efficiency 0.39, hand-written DDP 0.45); at width 64 and 256
    # rows per process a step takes ~100 ms of convolutions, which is what scaling out is for.
    p.add_argument("--batch-size", type=int, default=512, help="global batch (default 512: 256 per process)")
    p.add_argument("--width", type=int, default=64, help="cnn width (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu", action="store_true", help="also the GPU section (skipped without CUDA)")
    p.add_argument("--write", metavar="FILE", help=f"write/update the '{SECTION}' section of FILE (refused when "
                   f"the 1-minute load average before the run is above {MAX_LOAD})")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data and model


def load_data(args):
    from methodo.config import load_config
    from methodo.data import load_dataset, prepare

    cfg = load_config(ROOT / "examples" / "digits.yaml", [
        f"seed={args.seed}", "model=cnn", f"model.width={args.width}", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", "train.eval_batch_size=1024",
        "train.optimizer={name: sgd, lr: 0.05, momentum: 0.9}", "train.scheduler=none",
        "train.early_stopping=null", "train.progress=false", "train.device=cpu", "track.mlflow=false",
        "train.monitor.enabled=false",
    ])
    ds = load_dataset(cfg.data)
    return cfg, ds, prepare(ds, cfg.data, cfg.seed)


def build(ds, data, args):
    import torch

    from methodo.models import build_model

    torch.manual_seed(args.seed)
    return build_model("cnn", input_shape=ds.input_shape, n_outputs=data.n_outputs, kind=ds.kind, width=args.width)


# --------------------------------------------------------------------------- the loops


def methodo_fit(model, data, cfg, dist):
    from methodo.train.loop import batches_per_epoch, fit

    res = fit(model, data, cfg.train, seed=cfg.seed, dist=dist)
    steps = cfg.train.epochs * batches_per_epoch(len(data.tensors["train"][0]), cfg.train.batch_size,
                                                 dist.world if dist else 1)
    return steps, res.history[-1]["val_accuracy"]


def hand_fit(model, data, cfg, dist):
    """The plain loop: one permutation per epoch, batches by tensor indexing, each rank every world-th row of
    a global batch (DDP averages the gradients), running loss and accuracy, one validation pass per epoch."""
    import torch
    import torch.nn.functional as F

    from methodo.seed import generator

    tc = cfg.train
    rank, world = (dist.rank, dist.world) if dist else (0, 1)
    net = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=tc.optimizer.lr, **tc.optimizer.options)
    Xtr, ytr = data.tensors["train"]
    Xva, yva = data.tensors["val"]
    n, bs, g, steps, acc = len(Xtr), tc.batch_size, generator(cfg.seed, offset=1), 0, 0.0
    for _ in range(tc.epochs):
        net.train()
        perm = torch.randperm(n, generator=g)
        loss_sum, correct = 0.0, 0
        for s in range(0, n - 2 * world + 1, bs):
            idx = perm[s:s + bs][rank::world]
            xb, yb = Xtr[idx], ytr[idx]
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            loss_sum += loss.item() * len(idx)
            with torch.no_grad():
                correct += (out.argmax(1) == yb).sum().item()
        model.eval()
        with torch.no_grad():
            lo, hi = len(Xva) * rank // world, len(Xva) * (rank + 1) // world
            right = sum((model(Xva[i:min(i + 1024, hi)]).argmax(1) == yva[i:min(i + 1024, hi)]).sum().item()
                        for i in range(lo, hi, 1024))
        if dist is not None:
            import torch.distributed as tdist

            t = torch.tensor([float(right)])
            tdist.all_reduce(t)
            right = t.item()
        acc = right / len(Xva)
    return steps, acc


LOOPS = {"methodo": methodo_fit, "hand": hand_fit}


def one_run(loop: str, args, dist=None) -> tuple[float, int, float]:
    """``(seconds, optimizer steps, final val accuracy)`` of one training run in this process."""
    import torch

    torch.set_num_threads(1)
    cfg, ds, data = load_data(args)
    model = build(ds, data, args)
    if dist is not None:
        import torch.distributed as tdist

        tdist.barrier()
    t0 = time.perf_counter()
    steps, acc = LOOPS[loop](model, data, cfg, dist)
    return time.perf_counter() - t0, steps, acc


def _worker(loop: str, args):
    """One rank of a 2-process run (started by elastic_launch): rank 0's time is kept."""
    from methodo.train.distributed import session

    with session("cpu") as dist:
        return one_run(loop, args, dist)


def two_procs(loop: str, args) -> tuple[float, int, float]:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    conf = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                        rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1)
    os.environ["OMP_NUM_THREADS"] = "1"
    return elastic_launch(conf, _worker)(loop, args)[0]


RUNNERS = {"a": lambda a: one_run("methodo", a), "b": lambda a: two_procs("methodo", a),
           "c": lambda a: one_run("hand", a), "d": lambda a: two_procs("hand", a)}


# --------------------------------------------------------------------------- GPU


def gpu_section(args) -> list[str]:
    """bf16 + channels_last + torch.compile on 1 GPU, nccl DDP on 2: images/s, or why it was skipped."""
    import torch

    if not torch.cuda.is_available():
        why = "skipped: no CUDA device on this machine (`torch.cuda.is_available()` is False)"
        print(f"GPU: {why}")
        return [f"**GPU:** {why}. Nothing measured; run `python bench/ddp.py --gpu` on a GPU node."]
    from methodo.train.loop import fit

    name, count = torch.cuda.get_device_name(0), torch.cuda.device_count()
    rows = ["| variant | GPUs | images/s | ms/step |", "|---|---:|---:|---:|"]
    for label, opts in (("fp32", {}), ("bf16 + channels_last", {"precision": "bf16", "channels_last": True}),
                        ("bf16 + channels_last + compile", {"precision": "bf16", "channels_last": True,
                                                           "compile": True})):
        sec, steps, n_img = _gpu_run(fit, opts, args)
        rows.append(f"| {label} | 1 | {n_img / sec:,.0f} | {1000 * sec / steps:.1f} |")
        print(rows[-1], flush=True)
    if count >= 2:
        from torch.distributed.launcher.api import LaunchConfig, elastic_launch

        conf = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=2, run_id=uuid.uuid4().hex,
                            rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0)
        sec, steps, n_img = elastic_launch(conf, _gpu_worker)(args)[0]
        rows.append(f"| bf16 + channels_last + compile, DDP nccl | 2 | {n_img / sec:,.0f} | {1000 * sec / steps:.1f} |")
    else:
        rows.append("| DDP nccl | 2 | skipped: one GPU | |")
    return [f"**GPU:** {count} × {name}, torch {torch.__version__}, CUDA {torch.version.cuda}; ResNet "
            "(methodo `resnet`) on 50,000 random 3×32×32 images, batch 256 per GPU, 2 epochs, the second timed.", "",
            *rows]


def _gpu_data(n: int):
    import types

    import torch

    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    return types.SimpleNamespace(task="classification", tensors={"train": (X, y), "val": (X[:5000], y[:5000])})


def _gpu_run(fit, opts: dict, args, dist=None, *, device: str = "cuda", n: int = 50_000) -> tuple[float, int, int]:
    """Seconds of the second epoch, its steps and images (the first epoch compiles and warms up). ``device``
    and ``n``: a dry run of this code on the CPU (``_gpu_run(fit, {}, None, device="cpu", n=600)``)."""
    import torch

    from methodo.config import TrainConfig
    from methodo.models import build_model

    data = _gpu_data(n)
    world = dist.world if dist else 1
    bs = 256 * world
    tcfg = TrainConfig.model_validate({"epochs": 2, "batch_size": bs, "device": device, "progress": False,
                                       "early_stopping": None, "monitor": {"enabled": False},
                                       "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, **opts})
    model = build_model("resnet", input_shape=(3, 32, 32), n_outputs=10, kind="image")
    times = []
    res = fit(model, data, tcfg, seed=0, dist=dist, on_epoch=lambda row: times.append(row["time_s"]))
    if device == "cuda":
        torch.cuda.synchronize()
    steps = len(res.lrs) // 2
    return times[-1], steps, steps * bs


def _gpu_worker(args):
    from methodo.train.distributed import session
    from methodo.train.loop import fit

    with session("cuda") as dist:
        return _gpu_run(fit, {"precision": "bf16", "channels_last": True, "compile": True}, args, dist)


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    args = parse_args(argv)
    cpu, nproc = cpu_and_nproc()
    load_before = loadavg()
    if args.write and load_too_high(load_before):
        print(f"error: the 1-minute load average is {load_before} (> {MAX_LOAD}); not writing {args.write}. Run "
              "it on an idle machine, or without --write to see the figures anyway.", file=sys.stderr)
        return 2
    cfg, ds, data = load_data(args)
    n_tr = len(data.tensors["train"][0])
    print(f"digits: {n_tr} train rows; cnn width {args.width}; global batch {args.batch_size}; {args.epochs} "
          f"epochs; {args.rounds} rounds + 1 warm-up; nproc {nproc}", flush=True)
    keys = list(RUNNERS)
    per_step: dict[str, list[float]] = {k: [] for k in keys}
    accs: dict[str, float] = {}
    for r in range(args.rounds + 1):
        order = keys[(r - 1) % len(keys):] + keys[:(r - 1) % len(keys)] if r else keys
        parts = {}
        for k in order:
            sec, steps, acc = RUNNERS[k](args)
            if r > 0:
                per_step[k].append(1000 * sec / steps)
            accs[k] = acc
            parts[k] = f"{k}={1000 * sec / steps:.1f}ms/step"
        print(f"{'warm-up' if r == 0 else f'round {r}/{args.rounds}':>12}: " + "  ".join(parts[k] for k in keys),
              flush=True)
    load_after = loadavg()
    med = {k: statistics.median(v) for k, v in per_step.items()}
    eff_m, eff_h = med["a"] / (2 * med["b"]), med["c"] / (2 * med["d"])
    overhead = med["b"] / med["d"]
    table = ["| variant | median ms/step | min–max ms/step | final val accuracy |", "|---|---:|---:|---:|"]
    table += [f"| {VARIANTS[k]} | {med[k]:.2f} | {min(per_step[k]):.2f}–{max(per_step[k]):.2f} | {accs[k]:.4f} |"
              for k in keys]
    verdict = (f"scaling efficiency of methodo's DDP on 2 processes {eff_m:.2f} (hand-written {eff_h:.2f}), "
               + ("**meets**" if eff_m >= EFFICIENCY_TARGET else "**misses**") + f" the {EFFICIENCY_TARGET} target; "
               f"methodo DDP / hand-written DDP = {overhead:.3f}× per step, "
               + ("**meets**" if overhead <= OVERHEAD_TARGET else "**misses**") + f" the {OVERHEAD_TARGET:.2f}× target")
    print()
    print("\n".join(table))
    print()
    print(verdict)
    print(f"load average (1 min) before / after: {load_before} / {load_after}")
    if load_too_high(load_before):
        print(f"warning: load average above {MAX_LOAD} before the run: these timings are unreliable")
    gpu = gpu_section(args) if args.gpu else ["**GPU:** not run (`--gpu` not given)."]
    if args.write:
        import torch

        cmd = "python bench/ddp.py " + " ".join(sys.argv[1:] if argv is None else argv)
        today = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        body = f"""{SECTION}

DDP on CPU processes against one process, and methodo's DDP loop against a hand-written one, measured by
`bench/ddp.py` (a benchmark run by hand, not a timed test).

- **Command:** `{cmd.strip()}`
- **Date:** {today}
- **Machine:** `nproc` = {nproc}, {cpu}; torch {torch.__version__} (CPU, gloo); one thread per process
- **Code measured:** methodo {code_version("src/methodo")}
- **Workload:** scikit-learn digits through methodo's data stage ({n_tr} train rows); `cnn` width {args.width}
  (conv-BN-ReLU stages: compute-bound); SGD lr 0.05 momentum 0.9; global batch {args.batch_size}
  ({args.batch_size // 2} per process with 2); {args.epochs} epochs, one validation pass per epoch. Time per
  optimizer step = the whole training ÷ its steps; median of {args.rounds} rounds after a warm-up, the order
  of the variants rotating. 2-process runs are started by `elastic_launch` (torchrun's API); rank 0's clock,
  started after a barrier. 1-minute load average {load_before} before, {load_after} after.

{chr(10).join(table)}

**Verdict:** {verdict}.

{chr(10).join(gpu)}
"""
        replace_section(Path(args.write), SECTION, body)
        print(f"wrote section '{SECTION}' of {args.write}")
    else:
        print("\n".join(gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
