"""How much does methodo's training loop cost over a hand-written one?

The same MLP on scikit-learn digits (methodo's own data stage, so every variant trains on the
exact same standardized tensors), same seed, optimizer, batch size and epochs, timed side by side
in one process:

  (a) methodo   ``methodo.train.loop.fit`` (progress off, early stopping off, no scheduler,
                no checkpoints)
  (b) loader    hand-written loop over ``DataLoader(TensorDataset)`` (per-sample collation)
  (c) indexing  hand-written loop cutting batches from one permutation by tensor indexing
  (d) lightning PyTorch Lightning ``Trainer.fit`` with DataLoaders over ``TensorDataset``
  (e) methodo   (a) with ``train.monitor.enabled=false``: what the per-epoch weight monitor costs

Every variant does the same work per epoch: one shuffled pass over the training rows with a
running train loss and accuracy, then one validation pass (loss and accuracy, eval batch 1024).
The timed region starts with a freshly built model and ends when training has finished; it
includes building the optimizer, the DataLoaders and the Lightning Trainer, which a user pays for
too. After one untimed warm-up round, every round runs all five variants, in an order that
rotates from round to round; the median wall time per variant is reported with its ratio to (c).

This is a benchmark, not a test: run it by hand.

    python bench/loop_overhead.py [--epochs N] [--rounds R] [--threads T] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

from _common import MAX_LOAD, ROOT, code_version, cpu_and_nproc, load_too_high, loadavg, replace_section  # bench/ is sys.path[0]

TARGET = 1.05  # methodo must be within this factor of (c)
SECTION = "## Loop overhead"

VARIANTS = {
    "a": "(a) methodo `fit`",
    "b": "(b) hand-written, `DataLoader(TensorDataset)`",
    "c": "(c) hand-written, batched tensor indexing",
    "d": "(d) PyTorch Lightning `Trainer.fit`",
    "e": "(e) methodo `fit`, weight monitor off",
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="epochs per training run (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds, each runs a, b, c, d (default 5)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads for every variant (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed for data split, model init and shuffling")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--write", metavar="FILE", help="write/update the '## Loop overhead' section of FILE "
                   f"(refused when the 1-minute load average before the run is above {MAX_LOAD})")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- setup


def load_data(seed: int, epochs: int, batch_size: int):
    """methodo's config → data stage: the same standardized tensors for every variant."""
    from methodo.config import load_config
    from methodo.data import load_dataset, prepare

    cfg = load_config(ROOT / "examples" / "digits.yaml", [
        f"seed={seed}", "model=mlp", f"train.epochs={epochs}", f"train.batch_size={batch_size}",
        "train.eval_batch_size=1024",
        "train.optimizer={name: sgd, lr: 0.05, momentum: 0.9}",
        "train.scheduler=none", "train.early_stopping=null", "train.progress=false",
        "train.device=cpu", "track.mlflow=false",
    ])
    ds = load_dataset(cfg.data)
    data = prepare(ds, cfg.data, cfg.seed)
    return cfg, ds, data


def build(ds, data, seed: int):
    import torch

    from methodo.models import build_model

    torch.manual_seed(seed)
    return build_model("mlp", input_shape=ds.input_shape, n_outputs=data.n_outputs, kind=ds.kind)


# --------------------------------------------------------------------------- the four variants
# Each takes (model, data, cfg, seed) and returns the last epoch's validation accuracy.


def run_methodo(model, data, cfg, seed):
    from methodo.train.loop import fit

    res = fit(model, data, cfg.train, seed=seed, ckpt_dir=None)
    return res.history[-1]["val_accuracy"]


def _sgd(model, cfg):
    import torch

    oc = cfg.train.optimizer
    return torch.optim.SGD(model.parameters(), lr=oc.lr, **oc.options)


def _validate(model, Xva, yva, bs):
    import torch
    import torch.nn.functional as F

    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(Xva), bs):
            out = model(Xva[s:s + bs])
            yb = yva[s:s + bs]
            loss_sum += F.cross_entropy(out, yb).item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
    return loss_sum / len(Xva), correct / len(Xva)


def run_loader(model, data, cfg, seed):
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from methodo.seed import generator

    tc = cfg.train
    opt = _sgd(model, cfg)
    train = DataLoader(TensorDataset(*data.tensors["train"]), batch_size=tc.batch_size, shuffle=True,
                       generator=generator(seed, offset=1))
    val = DataLoader(TensorDataset(*data.tensors["val"]), batch_size=tc.eval_batch_size)
    acc = 0.0
    for _ in range(tc.epochs):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in train:
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(yb)
            with torch.no_grad():
                correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
        model.eval()
        vloss, vcorrect, vn = 0.0, 0, 0
        with torch.no_grad():
            for xb, yb in val:
                out = model(xb)
                vloss += F.cross_entropy(out, yb).item() * len(yb)
                vcorrect += (out.argmax(1) == yb).sum().item()
                vn += len(yb)
        acc = vcorrect / vn
    return acc


def run_indexing(model, data, cfg, seed):
    import torch
    import torch.nn.functional as F

    from methodo.seed import generator

    tc = cfg.train
    opt = _sgd(model, cfg)
    Xtr, ytr = data.tensors["train"]
    Xva, yva = data.tensors["val"]
    n, bs = len(Xtr), tc.batch_size
    g = generator(seed, offset=1)  # the same shuffle stream as methodo's loop
    acc = 0.0
    for _ in range(tc.epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        loss_sum, correct, seen = 0.0, 0, 0
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            xb, yb = Xtr[idx], ytr[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            with torch.no_grad():
                correct += (out.argmax(1) == yb).sum().item()
            seen += len(idx)
        _, acc = _validate(model, Xva, yva, tc.eval_batch_size)
    return acc


def run_lightning(model, data, cfg, seed):
    import lightning as L
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from methodo.seed import generator

    tc = cfg.train

    class Lit(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            out = self.net(xb)
            loss = F.cross_entropy(out, yb)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            self.log("train_accuracy", (out.argmax(1) == yb).float().mean(), on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            xb, yb = batch
            out = self.net(xb)
            self.log("val_loss", F.cross_entropy(out, yb), on_step=False, on_epoch=True)
            self.log("val_accuracy", (out.argmax(1) == yb).float().mean(), on_step=False, on_epoch=True)

        def configure_optimizers(self):
            return _sgd(self.net, cfg)

    train = DataLoader(TensorDataset(*data.tensors["train"]), batch_size=tc.batch_size, shuffle=True,
                       generator=generator(seed, offset=1))
    val = DataLoader(TensorDataset(*data.tensors["val"]), batch_size=tc.eval_batch_size)
    trainer = L.Trainer(max_epochs=tc.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)  # no extra validation batches: same work as the others
    trainer.fit(Lit(model), train, val)
    return float(trainer.callback_metrics["val_accuracy"])


def run_methodo_no_monitor(model, data, cfg, seed):
    """(a) without the per-epoch weight monitor (weight/gradient quantiles, dead-ReLU probe forward)."""
    monitor = cfg.train.monitor.model_copy(update={"enabled": False})
    return run_methodo(model, data, cfg.model_copy(update={"train": cfg.train.model_copy(update={"monitor": monitor})}),
                       seed)


RUNNERS = {"a": run_methodo, "b": run_loader, "c": run_indexing, "d": run_lightning, "e": run_methodo_no_monitor}


# --------------------------------------------------------------------------- measuring


def quiet_lightning() -> None:
    import lightning  # noqa: F401  (importing it sets its loggers to INFO; lower them afterwards)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*GPU available but not used.*")


def time_one(key, ds, data, cfg, seed, threads):
    import torch

    torch.set_num_threads(threads)
    model = build(ds, data, seed)
    torch.manual_seed(seed)  # the same dropout stream for every variant
    t0 = time.perf_counter()
    acc = RUNNERS[key](model, data, cfg, seed)
    dt = time.perf_counter() - t0
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"variant {key} changed torch's thread count to {torch.get_num_threads()}")
    return dt, acc


def machine() -> dict:
    import torch

    cpu, nproc = cpu_and_nproc()
    import lightning

    return {"nproc": nproc, "cpu": cpu, "torch": torch.__version__, "lightning": lightning.__version__,
            "python": platform.python_version(),
            "code": code_version("src", digest_of="src/methodo/train/loop.py")}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from methodo.seed import seed_everything

    quiet_lightning()
    seed_everything(args.seed)  # as methodo.run does: same (deterministic) torch settings for all
    torch.set_num_threads(args.threads)
    cfg, ds, data = load_data(args.seed, args.epochs, args.batch_size)
    n_tr, n_va = len(data.tensors["train"][0]), len(data.tensors["val"][0])
    print(f"digits: {n_tr} train / {n_va} val rows; MLP; {args.epochs} epochs, batch {args.batch_size}, "
          f"SGD lr 0.05 momentum 0.9; torch threads {args.threads}; {args.rounds} rounds + 1 warm-up",
          flush=True)

    keys = list(RUNNERS)
    load_before = loadavg()
    if args.write and load_too_high(load_before):
        print(f"error: the 1-minute load average is {load_before} (> {MAX_LOAD}): other processes share the "
              f"cores, so the ratio would not be reliable; not writing {args.write}. Run it on an idle "
              "machine, or without --write to see the figures anyway.", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {k: [] for k in keys}
    accs: dict[str, float] = {}
    for r in range(args.rounds + 1):
        label = "warm-up" if r == 0 else f"round {r}/{args.rounds}"
        order = keys[(r - 1) % len(keys):] + keys[:(r - 1) % len(keys)] if r else keys  # rotate positions
        parts = {}
        for key in order:
            gc.collect()  # nobody pays for the previous variant's garbage
            dt, acc = time_one(key, ds, data, cfg, args.seed, args.threads)
            if r > 0:
                times[key].append(dt)
            accs.setdefault(key, acc)
            if abs(acc - accs[key]) > 1e-9:
                print(f"  note: variant {key} is not repeatable (val acc {acc:.4f} vs {accs[key]:.4f})")
            parts[key] = f"{key}={dt:.3f}s"
        print(f"{label:>12}: " + "  ".join(parts[k] for k in keys) + f"   (order {''.join(order)})", flush=True)
    load_after = loadavg()

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: med[k] / med["c"] for k in keys}
    paired = {k: statistics.median(t / tc for t, tc in zip(times[k], times["c"])) for k in keys}
    ratio_min = {k: min(times[k]) / min(times["c"]) for k in keys}
    verdict = (f"methodo / (c) = {ratio['a']:.3f}× by median wall time — "
               + ("**meets**" if ratio["a"] <= TARGET else "**misses**") + f" the {TARGET:.2f}× target "
               f"(median of per-round ratios {paired['a']:.3f}×, ratio of fastest runs {ratio_min['a']:.3f}×)")
    table = ["| variant | median s | min–max s | ratio to (c) | per-round ratio (median) | fastest-run ratio "
             "| final val accuracy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {VARIANTS[k]} | {med[k]:.3f} | {min(times[k]):.3f}–{max(times[k]):.3f} | {ratio[k]:.2f}× "
              f"| {paired[k]:.2f}× | {ratio_min[k]:.2f}× | {accs[k]:.4f} |" for k in keys]
    print()
    print("\n".join(table))
    print()
    print(verdict)
    print(f"load average (1 min) before / after: {load_before} / {load_after}")
    if load_too_high(load_before):
        print(f"warning: load average above {MAX_LOAD} before the run: these timings are unreliable")

    if args.write:
        cmd = "python bench/loop_overhead.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_section(Path(args.write), cmd.strip(), args, machine(), n_tr, n_va, table, verdict,
                      (load_before, load_after))
        print(f"wrote section '{SECTION}' of {args.write}")
    return 0


# --------------------------------------------------------------------------- BENCHMARKS.md


def write_section(path: Path, cmd: str, args, mach: dict, n_tr: int, n_va: int, table: list[str],
                  verdict: str, load: tuple[str, str]) -> None:
    today = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    body = f"""{SECTION}

Speed of methodo's training loop against hand-written PyTorch loops and PyTorch Lightning,
measured by `bench/loop_overhead.py` (a benchmark run by hand, not a timed test).

- **Command:** `{cmd}`
- **Date:** {today}
- **Machine:** `nproc` = {mach['nproc']}, {mach['cpu']}; torch {mach['torch']} (CPU),
  Lightning {mach['lightning']}, Python {mach['python']}; `torch.set_num_threads({args.threads})` for every variant
- **Code measured:** methodo {mach['code']}
- **Workload:** scikit-learn digits through methodo's data stage (`load_config("examples/digits.yaml", …)`,
  `load_dataset`, `prepare`: {n_tr} train / {n_va} val rows, standardized on train); `build_model("mlp")`
  (64→256→128→10, ReLU, dropout 0.2) from the same seed; SGD lr 0.05 momentum 0.9; batch {args.batch_size};
  {args.epochs} epochs; per epoch one shuffled training pass (running train loss and accuracy) and one
  validation pass (loss and accuracy, batch 1024). No scheduler, no early stopping, no checkpoints,
  no progress bar.
- **Timed:** from a freshly built model to the end of training (optimizer, DataLoaders and the
  Lightning `Trainer` are built inside the timed region). One untimed warm-up round, then
  {args.rounds} interleaved rounds; each round runs all five variants, and the order rotates from
  round to round (abcde, bcdea, cdeab, …) so each variant takes each slot equally often;
  `gc.collect()` before every run. Reported: median, min and max wall time per variant; the ratio
  of medians to (c) (the target's measure); the median over rounds of the same-round ratio to (c)
  (robust to slow drifts in machine load); and the ratio of the fastest runs (robust to bursts of
  load). 1-minute load average {load[0]} before, {load[1]} after the run.

{chr(10).join(table)}

**Verdict:** {verdict}.

Variants: (a) `methodo.train.loop.fit(model, data, cfg.train, seed=…, ckpt_dir=None)`;
(b) a plain loop over `DataLoader(TensorDataset(...), batch_size, shuffle=True)` (per-sample
collation); (c) a plain loop that cuts batches from one `torch.randperm` per epoch by tensor
indexing (the same shuffle stream as (a)); (d) a `LightningModule` logging loss/accuracy with
`self.log(..., on_epoch=True)` and `Trainer(max_epochs, accelerator="cpu", devices=1, logger=False,
enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
num_sanity_val_steps=0)` with DataLoaders over `TensorDataset`; (e) is (a) with
`train.monitor.enabled=false`, so (a) − (e) is what the per-epoch weight monitor (on by default: weight
and gradient quantiles per layer, a dead-ReLU probe forward) costs. The val-accuracy column is the
last epoch's and only checks that the variants did the same work: (a) and (c) draw the same
permutations and dropout masks, so they should agree exactly; (b) and (d) shuffle through
`DataLoader`, which also draws a base seed from the shuffle generator every epoch, so their batch
order differs from (a)/(c) but matches each other.
"""
    replace_section(path, SECTION, body)


if __name__ == "__main__":
    sys.exit(main())
