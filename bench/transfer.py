"""Reuse, measured: what a pretrained model buys on text and on images, and what each strategy costs.

Text (``examples/text_topics.py``: 600 standard-library docstring sentences, 4 subjects): MiniLM
(all-MiniLM-L6-v2, shipped by a package) as a linear probe (features cached), fully fine-tuned, with
LoRA adapters, beside a small transformer of the same tokenizer trained from scratch
(``examples/text_small_scratch.yaml``). Each is one ``methodo run`` of its example config under
``/usr/bin/time -v``: test accuracy with its bootstrap interval, trainable / total parameters, wall time
per epoch (``transfer.epoch_time_s``: the training epochs, validation included), peak RSS of the process.
The check of issue 13: LoRA trains at most 2 % of the parameters and lands within the interval of full
fine-tuning, or the numbers say by how much it does not.

Images (``examples/digits_transfer.py``): a cnn pretrained on digits 0-4, fine-tuned on digits 5-9 with
about 10 labels per class, against the same cnn from scratch on the same images, over 3 seeds.

This is a benchmark, not a test: run it by hand on an idle machine.

    python bench/transfer.py [--seeds 0,1,2] [--skip-text] [--skip-images] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from _common import MAX_LOAD, ROOT, code_version, cpu_and_nproc, load_too_high, loadavg, replace_section  # bench/ is sys.path[0]

SECTION = "## Transfer"
TEXT = {  # label → (example config, overrides)
    "linear probe (MiniLM frozen, features cached)": ("text_minilm_probe.yaml", []),
    "full fine-tune (MiniLM, lr_decay 0.7)": ("text_minilm_finetune.yaml", []),
    "LoRA (MiniLM, r 8 on query/value)": ("text_minilm_lora.yaml", []),
    "small transformer from scratch (1 layer, width 64)": ("text_small_scratch.yaml", []),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0,1,2", help="seeds of the image transfer (default 0,1,2)")
    p.add_argument("--workdir", default="bench_transfer_work", help="where the data and run dirs go (kept)")
    p.add_argument("--skip-text", action="store_true", help="leave out the MiniLM part")
    p.add_argument("--skip-images", action="store_true", help="leave out the digits part")
    p.add_argument("--timeout", type=int, default=3600, help="seconds allowed to one command")
    p.add_argument("--write", metavar="FILE", help="write/update the '## Transfer' section of FILE "
                   f"(refused when the 1-minute load average before the run is above {MAX_LOAD})")
    return p.parse_args(argv)


def timed(cmd: list[str], cwd: Path, timeout: int) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall seconds, peak RSS (MiB), exit code, stderr tail."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=env)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return {"wall_s": wall, "peak_mib": int(m.group(1)) / 1024 if m else float("nan"), "rc": p.returncode,
            "tail": p.stderr[-1500:]}


def text_part(work: Path, timeout: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "text_topics.csv").is_file():
        subprocess.run([sys.executable, str(ROOT / "examples" / "text_topics.py"), "--out", "text_topics.csv"],
                       cwd=work, check=True, capture_output=True, timeout=timeout)
    rows = {}
    for label, (config, over) in TEXT.items():
        out = work / Path(config).stem
        if out.exists():
            import shutil

            shutil.rmtree(out)
        r = timed([sys.executable, "-m", "methodo", "run", str(ROOT / "examples" / config), "track.mlflow=false",
                   "train.progress=false", *over, "--out", str(out)], work, timeout)
        if r["rc"] == 0:
            s = json.loads((out / "summary.json").read_text())
            t = s.get("transfer") or {}
            r.update(accuracy=s["metrics"]["test"]["accuracy"], interval=s["intervals"]["test"].get("accuracy"),
                     trainable=t.get("trainable_parameters"), total=t.get("total_parameters"),
                     share=t.get("trainable_share"), epoch_s=t.get("epoch_time_s"), epochs=s["epochs_run"],
                     test_rows=s["data"]["splits"]["test"]["n"], train_rows=s["data"]["splits"]["train"]["n"],
                     cached=(t.get("cached_features") or {}).get("used", False))
        rows[label] = r
        print(f"{label}: exit {r['rc']}, accuracy {r.get('accuracy')}, {r['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return rows


def lora_verdict(rows: dict) -> str:
    ft = next((r for k, r in rows.items() if k.startswith("full fine-tune")), None)
    lo = next((r for k, r in rows.items() if k.startswith("LoRA")), None)
    if not ft or not lo or "accuracy" not in ft or "accuracy" not in lo:
        return "LoRA vs fine-tune: not measured (a run failed)."
    share_ok = lo["share"] is not None and lo["share"] <= 0.02
    iv = ft["interval"]
    within = iv is not None and iv[0] <= lo["accuracy"] <= iv[1]
    text = (f"LoRA trains {lo['trainable']:,} of {lo['total']:,} parameters ({100 * lo['share']:.2f} %, "
            f"{'within' if share_ok else 'over'} the 2 % budget) and reaches test accuracy {lo['accuracy']:.3f}, ")
    if within:
        return text + f"within full fine-tuning's interval [{iv[0]:.3f}, {iv[1]:.3f}] (fine-tune {ft['accuracy']:.3f})."
    gap = lo["accuracy"] - ft["accuracy"]
    side = "below" if gap < 0 else "above"
    return text + (f"{side} full fine-tuning's interval [{iv[0]:.3f}, {iv[1]:.3f}] (fine-tune {ft['accuracy']:.3f}, "
                   f"difference {gap:+.3f})." if iv else f"fine-tune {ft['accuracy']:.3f} (no interval).")


def image_part(work: Path, seeds: str, timeout: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    res = work / "images.json"
    r = timed([sys.executable, str(ROOT / "examples" / "digits_transfer.py"), "--seeds", seeds, "--out",
               str(work / "images"), "--json", str(res)], work, timeout)
    if r["rc"] == 0:
        r["result"] = json.loads(res.read_text())
    return r


def render(args, text: dict | None, images: dict | None, load_before: str, load_after: str) -> str:
    import torch

    cpu, nproc = cpu_and_nproc()
    iv = lambda v: f" [{v[0]:.3f}, {v[1]:.3f}]" if v else ""  # noqa: E731
    lines = [SECTION, "",
             "What reuse buys, measured by `bench/transfer.py` (a benchmark run by hand, not a timed test).", "",
             f"- **Command:** `python bench/transfer.py --seeds {args.seeds}"
             + (" --skip-text" if args.skip_text else "") + (" --skip-images" if args.skip_images else "")
             + (f" --write {args.write}`" if args.write else "`"),
             f"- **Date:** {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- **Machine:** `nproc` = {nproc}, {cpu}; torch {torch.__version__} (CPU), Python {platform.python_version()}",
             f"- **Code measured:** methodo {code_version('src')}",
             f"- **Load:** 1-minute load average {load_before} before, {load_after} after.", ""]
    if text:
        any_row = next((r for r in text.values() if "train_rows" in r), {})
        lines += ["### Text: MiniLM on 4 subjects of standard-library sentences", "",
                  f"{any_row.get('train_rows', '?')} training and {any_row.get('test_rows', '?')} test sentences "
                  "(`examples/text_topics.py`), `max_length` 32, each strategy's example config as shipped. "
                  "*s / epoch*: mean wall time of a training epoch (validation included); *peak RSS*: the whole "
                  "`methodo run` process.", "",
                  "| strategy | config | test accuracy [95 % interval] | trained / total parameters | epochs | s / epoch | peak RSS MiB | wall s |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for label, r in text.items():
            cfg = TEXT[label][0]
            if r["rc"] != 0:
                lines.append(f"| {label} | `{cfg}` | failed (exit {r['rc']}) | | | | {r['peak_mib']:.0f} | {r['wall_s']:.0f} |")
                continue
            lines.append(f"| {label} | `{cfg}` | {r['accuracy']:.3f}{iv(r['interval'])} | {r['trainable']:,} / "
                         f"{r['total']:,} ({100 * r['share']:.2f} %) | {r['epochs']} | {r['epoch_s']:.2f} | "
                         f"{r['peak_mib']:.0f} | {r['wall_s']:.0f} |")
        lines += ["", "- " + lora_verdict(text), ""]
    if images:
        lines += ["### Images: pretrained on digits 0-4, fine-tuned on 5-9 with ~10 labels per class", ""]
        if images["rc"] != 0:
            lines += [f"`examples/digits_transfer.py` failed (exit {images['rc']}): {images['tail'][-300:]}", ""]
        else:
            from importlib import util

            spec = util.spec_from_file_location("digits_transfer", ROOT / "examples" / "digits_transfer.py")
            mod = util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            lines += ["`examples/digits_transfer.py` (configs `digits_pretrain_a.yaml`, `digits_fewshot_b.yaml`): "
                      "per seed another draw of the 50 training images, another initialization and other batches; "
                      "scratch is the same cnn from random weights with the same data, epochs and optimizer "
                      f"(`transfer.compare_scratch`). Wall time of the whole script: {images['wall_s']:.0f} s.", "",
                      mod.table(images["result"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.workdir).resolve()
    load_before = loadavg()
    if args.write and load_too_high(load_before):
        print(f"refusing --write: 1-minute load average {load_before} > {MAX_LOAD} (timings would mislead)",
              file=sys.stderr)
        return 2
    text = None if args.skip_text else text_part(work / "text", args.timeout)
    images = None if args.skip_images else image_part(work, args.seeds, args.timeout)
    body = render(args, text, images, load_before, loadavg())
    print(body)
    if args.write:
        replace_section(Path(args.write), SECTION, body + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
