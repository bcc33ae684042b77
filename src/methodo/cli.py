"""Command line: parse arguments, then hand over to the pipeline or a registry listing.

Kept thin and light: nothing heavy (torch, mlflow, ...) is imported until a command needs it, so
``methodo --help`` is instant. Exit codes: 0 success, 2 bad input (one ``error: ...`` line),
3 a run that started and failed, 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import sys

from methodo.registry import REGISTRIES

LISTABLE = tuple(REGISTRIES.names())  # `methodo list WHAT`; each registry is imported only when listed


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other bad input
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


_CONFIG_SECTIONS = "\0config sections"  # placeholder: `methodo config --help` reads the schema only when shown


class _ConfigHelp(argparse.RawDescriptionHelpFormatter):
    """Help of `methodo config`: its epilog lists the config's top-level keys, read from the schema."""

    def add_text(self, text):
        if text == _CONFIG_SECTIONS:
            from methodo.config_doc import sections_text

            text = sections_text()
        super().add_text(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="methodo", description="Deep-learning methodology for PyTorch: train the right way, "
                "and be told what is wrong.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="run the whole pipeline: data → train → evaluate → diagnose → report",
                       description="Run one experiment and write a run dir (config.yaml, summary.json, "
                       "report.html, metrics.csv, figures/, checkpoints/).")
    r.add_argument("config", nargs="?", help="YAML config (optional with --resume)")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")
    r.add_argument("--out", metavar="DIR", help="run dir to create (default runs/NAME-TIMESTAMP-XXXX)")
    r.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    r.add_argument("--nproc", type=int, metavar="N", help="train on N processes of this machine with DDP, "
                   "launched by torchrun (gloo on CPU, nccl on GPUs: one GPU each); the same as `torchrun "
                   "--standalone --nproc-per-node N -m methodo run ...`")
    r.add_argument("--max-restarts", type=int, default=0, metavar="K", help="with --nproc: restart the group "
                   "up to K times when a process dies; it resumes from the last checkpoint (default 0)")

    lf = sub.add_parser("lr-find", help="LR range test: plot the loss against an exponential LR ramp and "
                        "suggest a learning rate", description="Run the LR range test (exponential ramp, "
                        "smoothed loss, stop on divergence; the model is restored afterwards), write "
                        "lr_find.json (suggested_lr) and lr_find.png, and print the suggestion. Ramp options: "
                        "train.lr_find.{start_lr,end_lr,num_iter,smooth,diverge,suggestion}.")
    lf.add_argument("config", help="YAML config")
    lf.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.batch_size=32")
    lf.add_argument("--out", metavar="DIR", help="output folder (default runs/NAME-lrfind-TIMESTAMP-XXXX)")

    _add_tune_parser(sub)

    ls = sub.add_parser("list", help="list a registry: " + ", ".join(LISTABLE))
    ls.add_argument("what", choices=LISTABLE, metavar="WHAT", help=" | ".join(LISTABLE))
    ls.add_argument("--timm", nargs="?", const="*", metavar="FILTER",
                    help="models: list timm's architectures (model.name: timm:NAME) matching FILTER, e.g. 'resnet*'")

    rep = sub.add_parser("report", help="re-render a run's report.html from its run dir")
    rep.add_argument("run_dir", metavar="DIR")

    _add_data_parser(sub)
    _add_lab_parser(sub)
    _add_model_use_parsers(sub)

    lm = sub.add_parser("evaluate-lm", help="benchmark a local Hugging Face causal LM (lm-evaluation-harness) "
                        "and/or measure its sliding-window perplexity on a text file",
                        description="Score a local Hugging Face causal language model (a save_pretrained "
                        "folder) on lm-evaluation-harness tasks and print a leaderboard-style table (score per "
                        "task and their average), and/or its sliding-window perplexity on a text file. Needs "
                        "the llm extra: pip install 'methodo[llm]'. For the classic metrics of a methodo run on "
                        "new labeled data: `methodo evaluate RUN_DIR DATA`.")
    lm.add_argument("model_path", metavar="MODEL_PATH", help="folder with config.json, weights and tokenizer")
    lm.add_argument("--tasks", nargs="+", metavar="TASK", help="lm-eval task names (comma or space separated): "
                    "methodo_science_mc (ships with methodo), arc_easy, arc_challenge, hellaswag, mmlu, "
                    "truthfulqa_mc2, winogrande, gsm8k, ... or `leaderboard` for the six Open LLM Leaderboard ones")
    lm.add_argument("--limit", type=int, metavar="N", help="at most N examples per task (quick checks)")
    lm.add_argument("--num-fewshot", type=int, metavar="K", help="few-shot examples in each prompt (task default)")
    lm.add_argument("--batch-size", type=int, default=8, metavar="B", help="batch size (default 8)")
    lm.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:0, ...")
    lm.add_argument("--perplexity", metavar="FILE", help="text file to measure sliding-window perplexity on")
    lm.add_argument("--window", type=int, default=None, metavar="N",
                    help="tokens per window (default: the model's context length)")
    lm.add_argument("--stride", type=int, default=None, metavar="S",
                    help="tokens the window moves each step (default: window/2; = window for non-overlapping chunks)")
    lm.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    rb = sub.add_parser("robustness", help="adversarial (FGSM, PGD, one-pixel) and corruption robustness of a "
                        "trained image classifier", description="Attack the run's test images with torchattacks "
                        "(FGSM and PGD at each eps, one-pixel at each k) and corrupt them (noise, blur, brightness, "
                        "contrast, JPEG, pixelation at 5 severities); print robust accuracy, the share fooled by k "
                        "pixels and the mean corruption error. Options: evaluate.robustness.* of the run's config, "
                        "or overrides such as evaluate.robustness.eps=[0.05,0.1]. Without --out the results join "
                        "the run (robustness.json, figures, summary.json, report.html).")
    rb.add_argument("run_dir", metavar="RUN_DIR")
    rb.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. evaluate.robustness.max_images=100")
    rb.add_argument("--out", metavar="DIR", help="write to this new folder instead of the run dir")
    _add_config_parser(sub)
    _add_diagnose_parser(sub)
    _add_reproduce_parser(sub)
    _add_compare_parser(sub)
    _add_new_parser(sub)
    _add_suggest_parser(sub)
    _add_slurm_parser(sub)
    return p


def _add_data_parser(sub) -> None:
    """`methodo data inspect|preview|label-issues`: the data stage on its own, before any training."""
    # The data stage on its own: audit and augmentation preview, before any training.
    d = sub.add_parser("data", help="audit the data (inspect), preview the augmentations (preview), or find "
                       "wrong labels (label-issues)")
    dsub = d.add_subparsers(dest="data_command", parser_class=_Parser, required=True,
                            metavar="{inspect,preview,label-issues}")
    di = dsub.add_parser("inspect", help="data audit before any training: splits, imbalance, duplicates and "
                         "leakage across splits, missing/constant features, unreadable files, bad labels")
    di.add_argument("config", help="YAML config")
    di.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    di.add_argument("--json", action="store_true", help="print one JSON object: splits and findings")
    dp = dsub.add_parser("preview", help="augmentation gallery: training images beside augmented copies")
    dp.add_argument("config", help="YAML config")
    dp.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    dp.add_argument("--out", metavar="FILE.png", required=True, help="PNG file to write")
    dp.add_argument("--n", type=int, default=8, help="number of training images (default 8)")
    dp.add_argument("--copies", type=int, default=5, help="augmented copies of each (default 5)")
    dl = dsub.add_parser("label-issues", help="find rows whose label looks wrong, over every row: K-fold "
                         "cross-fitting of the configured model, then confident learning (cleanlab)",
                         description="Train the configured model K times, each time on K-1 folds, so every row "
                         "gets a probability from a model that never saw it; confident learning (cleanlab) then "
                         "flags the rows whose given label is unlikely. Prints the most suspect rows and writes "
                         "them all to --issues (label_issues.csv). With --fix, also writes a cleaned copy of a "
                         "CSV dataset (the dataset itself is never changed).")
    dl.add_argument("config", help="YAML config")
    dl.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    dl.add_argument("--folds", type=int, default=5, metavar="K", help="cross-fitting folds, 2 to the number of "
                    "rows (default 5)")
    dl.add_argument("--issues", default="label_issues.csv", metavar="FILE",
                    help="CSV file to write every suspect to; must not exist (default label_issues.csv)")
    dl.add_argument("--fix", choices=("drop", "relabel"), help="with --out: write a cleaned copy of the CSV "
                    "dataset, without the suspect rows (drop) or with their suggested label (relabel)")
    dl.add_argument("--out", metavar="CLEAN.csv", help="the cleaned copy --fix writes; must not exist")
    dl.add_argument("--show", type=int, default=20, metavar="N", help="suspects printed (default 20; all are "
                    "in --issues)")


def _add_lab_parser(sub) -> None:
    lb = sub.add_parser("lab", help="the course's concepts as small deterministic experiments: a figure, measured "
                        "numbers, a checked conclusion (methodo lab list)",
                        description="Run a lab: an experiment showing one concept of the course with methodo's own "
                        "stages, deterministic for a seed. Writes lab.json (the numbers, the conclusion and "
                        "conclusion_holds) and figures/ into --out. `methodo lab list` lists the labs; `methodo lab "
                        "all --out DIR` runs them all and writes a gallery (DIR/index.html, DIR/README.md); --notebook "
                        "writes a Jupyter notebook running the same steps one by one.")
    lb.add_argument("name", metavar="NAME", help="a lab (see `methodo lab list`), list, or all")
    lb.add_argument("--out", metavar="DIR", help="folder to write (new, empty, or made by methodo lab; default "
                    "labs/NAME, or labs for all)")
    lb.add_argument("--seed", type=int, default=0, metavar="S", help="the seed (default 0)")
    lb.add_argument("--notebook", metavar="FILE.ipynb", help="write a notebook running the lab step by step instead "
                    "of running it (its output folder: --out, default FILE_lab next to the notebook)")


def cmd_lab(args) -> int:
    from pathlib import Path

    from methodo.errors import BadInput
    from methodo.labs import LABS, check_seed, get_lab, run_all, run_lab, show_numbers

    if args.name == "list":
        width = max(len(n) for n in LABS.names())
        for e in LABS.entries():
            print(f"{e.name:<{width}}  {e.help}")
        return 0
    check_seed(args.seed)
    if args.name == "all":
        if args.notebook:
            raise BadInput("lab all --notebook: write one notebook per lab (methodo lab NAME --notebook FILE.ipynb)")
        out = Path(args.out or "labs")

        def line(res):
            print(f"{res.lab:<15} {'holds' if res.conclusion_holds else 'DOES NOT HOLD':<13} {res.duration_s:5.1f} s  "
                  f"{res.conclusion}")

        results = run_all(out, seed=args.seed, progress=line)
        held = sum(r.conclusion_holds for r in results)
        print(f"{held} of {len(results)} conclusions hold; gallery: {out / 'index.html'} and {out / 'README.md'}")
        return 0
    lab = get_lab(args.name)
    if args.notebook:
        from methodo.labs.notebook import write_notebook

        path = write_notebook(lab, args.notebook, seed=args.seed, out=args.out)
        print(f"notebook: {path} ({lab.name}, seed {args.seed}; run it with jupyter, or: jupyter nbconvert --execute "
              f"--to notebook {path.name})")
        return 0
    res = run_lab(lab.name, seed=args.seed, out=args.out)
    print(f"lab {res.lab} (seed {res.seed}): {res.title}")
    print(f"claim: {res.claim}")
    for key, text in show_numbers(res.numbers):
        print(f"  {key}: {text}")
    print(f"conclusion: {res.conclusion}")
    print(f"conclusion_holds: {str(res.conclusion_holds).lower()}"
          + ("" if res.conclusion_holds else " (failed: " + ", ".join(k for k, v in res.checks.items() if not v) + ")"))
    print(f"results: {res.out / 'lab.json'}\nfigures: " + ", ".join(str(res.out / f) for f in res.figures))
    return 0


def _add_model_use_parsers(sub) -> None:
    """Commands on a trained run: embed, merge, predict, evaluate, export."""
    e = sub.add_parser("embed", help="project a run's test embeddings (penultimate layer) to 2-D; figure in "
                       "the report")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--method", choices=("pca", "tsne", "umap"), default="pca", help="projection (default pca)")

    mg = sub.add_parser("merge", help="fold a LoRA run's adapter into the weights: checkpoints/merged.safetensors, "
                        "the base architecture's weights, usable without PEFT")
    mg.add_argument("run_dir", metavar="RUN_DIR")

    pr = sub.add_parser("predict", help="predict new data with a run's model and its own preprocessing",
                        description="Predict every row of a CSV (the training feature columns, in any order; the "
                        "target column is optional and ignored), every image of a folder or image files, or every "
                        "line of a text file, with the run's best weights and exactly the preprocessing fitted on "
                        "its training split. Writes one CSV row per input: its identifier (row: the file line; "
                        "path: the image), the prediction and the scores (p_CLASS). The input is streamed in "
                        "chunks, so any size predicts in bounded memory.")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="a finished run dir (or a folder from `methodo export "
                    "--format safetensors`)")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="a CSV file, an image folder or image files, a text file")
    pr.add_argument("--out", metavar="FILE", help="CSV file to write (must not exist; default: stdout)")

    ev = sub.add_parser("evaluate", help="evaluate a run's model on new labeled data: metrics with intervals beside "
                        "the run's test numbers, baselines, findings and drift checks (language models: evaluate-lm)",
                        description="Evaluate the model of RUN_DIR on new labeled DATA — a CSV with the feature and "
                        "target columns, a folder with one subfolder of images per class, or a config whose data "
                        "section names a dataset — with the run's own preprocessing: the run's metric set with "
                        "bootstrap intervals, beside the run's test numbers and the dummy baselines, the confusion "
                        "matrix and curves, the findings, and drift checks against the training split (data_drift, "
                        "label_shift, performance_drop, out_of_range_inputs). Writes evaluate.html, "
                        "evaluation.json, predictions.csv and figures/ to --out. Two evaluation commands cover "
                        "every model: `methodo evaluate` (classic metrics on any run) and `methodo evaluate-lm` "
                        "(perplexity and benchmark suites of language models).")
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a finished run dir")
    ev.add_argument("data", metavar="DATA", help="labeled CSV, labeled image folder, or a dataset config (YAML)")
    ev.add_argument("--out", metavar="DIR", help="output folder to create (default runs/NAME-evaluate-TIMESTAMP-XXXX)")

    ex = sub.add_parser("export", help="export a run's model to ONNX, TorchScript or safetensors, with its "
                        "preprocessing and model card", description="Write the model of RUN_DIR in a format usable "
                        "without methodo: onnx (checked in onnxruntime against PyTorch within 1e-5 on the run's test "
                        "inputs; needs pip install 'methodo[export]'), torchscript (checked the same way), or "
                        "safetensors (weights + inputs.json: a folder methodo.load and methodo predict read). The "
                        "preprocessing goes with it (preprocessing.json, and features.skops for tables), and the "
                        "run's MODEL_CARD.md.")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a finished run dir")
    ex.add_argument("--format", required=True, choices=("onnx", "torchscript", "safetensors"), help="onnx | "
                    "torchscript | safetensors")
    ex.add_argument("--out", metavar="DIR", help="folder to create (default runs/NAME-export-FORMAT-TIMESTAMP-XXXX)")


def _add_tune_parser(sub) -> None:
    t = sub.add_parser("tune", help="hyper-parameter search with Optuna over any config key (validation split only)",
                       description="Search a space of config values (SPACE.yaml: {float: [low, high], log: true}, "
                       "{int: [low, high], step: S}, {choice: [...]}, conditions with when:) with an Optuna study: "
                       "every trial is the config with its values, validated like `methodo run`, trained and scored on "
                       "the validation split only. Writes tune.json, trials.csv, best.yaml (`methodo run best.yaml` "
                       "reproduces the best trial) and tune.html into --out; the test split is read once, for the "
                       "best config, with --final-test.")
    t.add_argument("config", help="YAML config: the base every trial starts from")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides of the base config")
    t.add_argument("--space", required=True, metavar="SPACE.yaml", help="the search space: config keys → ranges "
                   "or choices")
    t.add_argument("--trials", type=int, required=True, metavar="N", help="the study's size: trials are run until "
                   "the study holds N (a rerun of an unfinished --study runs the rest)")
    t.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    t.add_argument("--sampler", default="tpe", metavar="S", help="how values are chosen: "
                   "grid, random, tpe, gp, cmaes, nsga2 or qmc (default tpe; `methodo list samplers`)")
    t.add_argument("--pruner", metavar="P", help="stop poor trials early from their per-epoch validation score: "
                   "median, halving, hyperband, hyperband:N (first rung at epoch N) or none (default median; none with "
                   "several objectives)")
    t.add_argument("--objectives", metavar="NAME:max|min,...", help="what to optimize, e.g. "
                   "val_accuracy:max,parameters:min (default the task's validation score; several: Pareto front)")
    t.add_argument("--storage", metavar="URL", help="Optuna storage: sqlite:///FILE (default sqlite:///tune.db "
                   "in the working dir, or $METHODO_TUNE_STORAGE) or postgresql://USER:PASSWORD@HOST/DB for "
                   "workers on several machines")
    t.add_argument("--study", metavar="NAME", help="study name (default the config's name); an existing study "
                   "with this name continues")
    t.add_argument("--workers", type=int, default=1, metavar="K", help="worker processes on this machine sharing "
                   "the study (default 1)")
    t.add_argument("--out", metavar="DIR", help="folder to write (default runs/NAME-tune-TIMESTAMP-XXXX)")
    t.add_argument("--final-test", action="store_true", help="after the search, run the best config once "
                   "(DIR/best) and report its test metrics: the only time the test split is read")
    t.add_argument("--reeval-top", type=int, default=0, metavar="K", help="re-run the K best trials with 3 other "
                   "seeds (finding search_overfits_val when the best does not hold)")
    t.add_argument("--hypergradient", type=float, metavar="BETA", help="also train the best config from the "
                   "base LR with hypergradient descent on the LR (step BETA) and compare its LR with the search's")
    t.add_argument("--heartbeat", type=int, default=10, metavar="S", help="seconds between a running trial's "
                   "heartbeats; a trial silent for 3×S is failed and retried (default 10)")


def _add_slurm_parser(sub) -> None:
    sl = sub.add_parser("slurm", help="print (or --submit) an sbatch script running this config with DDP on a "
                        "Slurm cluster: srun, one torchrun per node, requeue before the time limit",
                        description="Write an sbatch script for `methodo run CONFIG` on N nodes × G GPUs (or CPU "
                        "processes): #SBATCH lines, module loads, srun starting one torchrun per node with a "
                        "rendezvous on the job's first node, --hint=nomultithread and --cpus-per-task = processes "
                        "× cores per process, and --requeue with a SIGUSR1 handler that stops the run after its "
                        "epoch's checkpoint before the time limit so the requeued job resumes the same run dir. "
                        "Printed on stdout; --submit gives it to sbatch.")
    sl.add_argument("config", help="YAML config")
    sl.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    sl.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    sl.add_argument("--gpus-per-node", type=int, default=0, metavar="G", help="GPUs per node, one process each "
                    "(default 0: CPU processes with gloo)")
    sl.add_argument("--procs-per-node", type=int, metavar="P", help="processes per node (default: G, or 1 "
                    "without GPUs)")
    sl.add_argument("--cpus-per-proc", type=int, default=10, metavar="C", help="physical cores per process: a "
                    "node's cores ÷ its GPUs (default 10: Jean Zay's 40-core, 4-GPU V100 nodes; 8 on its A100, "
                    "24 on its H100 nodes)")
    sl.add_argument("--cpus-per-task", type=int, metavar="C", help="#SBATCH --cpus-per-task (default: P × "
                    "--cpus-per-proc)")
    sl.add_argument("--partition", help="#SBATCH --partition")
    sl.add_argument("--account", help="#SBATCH --account (e.g. abc@v100 on Jean Zay)")
    sl.add_argument("--qos", help="#SBATCH --qos (e.g. qos_gpu-t3)")
    sl.add_argument("--time", metavar="HH:MM:SS", help="#SBATCH --time, the job's time limit")
    sl.add_argument("--constraint", help="#SBATCH --constraint (e.g. v100-32g)")
    sl.add_argument("--modules", nargs="+", default=[], metavar="MODULE", help="modules to load after `module "
                    "purge` (e.g. pytorch-gpu/py3/2.4.0)")
    sl.add_argument("--job-name", metavar="NAME", help="#SBATCH --job-name (default: the config's name)")
    sl.add_argument("--signal-margin", type=int, default=120, metavar="S", help="seconds before the time limit "
                    "at which the run is asked to stop after its epoch and the job requeued (default 120)")
    sl.add_argument("--max-restarts", type=int, default=0, metavar="K", help="torchrun restarts of the group "
                    "when a process fails, each resuming from the last checkpoint (default 0)")
    sl.add_argument("--python", metavar="PATH", help="Python that runs methodo on the nodes (default: this one, "
                    f"{sys.executable})")
    sl.add_argument("--submit", action="store_true", help="submit with sbatch instead of printing")


def cmd_slurm(args) -> int:
    from methodo.config import load_config
    from methodo.launch.slurm import SlurmJob, submit
    from methodo.train.distributed import check_batch

    cfg = load_config(args.config, list(args.overrides))  # bad config: one error line, no script
    job = SlurmJob(config=args.config, overrides=list(args.overrides), name=args.job_name or cfg.name,
                   nodes=args.nodes, gpus_per_node=args.gpus_per_node, procs_per_node=args.procs_per_node,
                   cpus_per_proc=args.cpus_per_proc, cpus_per_task=args.cpus_per_task, partition=args.partition,
                   account=args.account, qos=args.qos, time=args.time, constraint=args.constraint,
                   modules=list(args.modules), signal_margin=args.signal_margin, max_restarts=args.max_restarts,
                   python=args.python or sys.executable)
    text = job.script()
    check_batch(cfg.train.batch_size, job.nodes * job.procs)
    if args.submit:
        print(submit(text))
    else:
        print(text, end="")
    return 0


def _add_config_parser(sub) -> None:
    c = sub.add_parser("config", help="the config reference: every key, its type, default and help",
                       description="The config reference, generated from the schema's own help texts "
                       "(docs/config.md is the same text).", epilog=_CONFIG_SECTIONS, formatter_class=_ConfigHelp)
    csub = c.add_subparsers(dest="config_command", parser_class=_Parser, metavar="{show,docs}")
    cs = csub.add_parser("show", help="print the reference of one key or section (all keys when none is given)")
    cs.add_argument("key", nargs="?", default="", metavar="KEY", help="dotted key or section, e.g. train.optimizer")
    cs.add_argument("--options", metavar="NAME", help="for model, train.optimizer or train.scheduler: the options "
                    "that component NAME takes, with their defaults (e.g. show train.optimizer --options adam)")
    cd = csub.add_parser("docs", help="write the whole reference as Markdown (docs/config.md)")
    cd.add_argument("--out", metavar="FILE", help="file to write (default: print it)")


def _add_diagnose_parser(sub) -> None:
    """`diagnose`: recompute a run's findings from its run dir and compare them with the recorded ones."""
    dg = sub.add_parser("diagnose", help="recompute a run's findings from its run dir alone (and the data it names) "
                        "and check they are the recorded ones",
                        description="Recompute every finding of a finished run from its run dir: the data audit "
                        "on the data config.yaml names (or --data PATH; checked against the sha256 digest the run "
                        "recorded) split by splits.csv, the run checks on metrics.csv, predictions_test.csv, "
                        "label_scores.csv, monitor.json and summary.json, the fairness and robustness checks on "
                        "summary.json; print them and compare them with summary.json's findings (same ids and "
                        "evidence). Exit 0 when all are equal, 3 when some differ. The run dir is only read.")
    dg.add_argument("run_dir", metavar="RUN_DIR", help="a finished run dir")
    dg.add_argument("--data", metavar="PATH", help="the run's data file or folder, when it is not where config.yaml's "
                    "data.path says (it must be the same data: its digest is checked)")
    dg.add_argument("--out", metavar="FILE", help="also write the recomputed findings and the comparison as JSON "
                    "(the file must not exist)")


def cmd_diagnose(args) -> int:
    import json
    from pathlib import Path

    from methodo.errors import BadInput, RunFailed

    out = Path(args.out) if args.out else None
    if out is not None:
        if out.exists() or out.is_symlink():
            raise BadInput(f"--out {out}: exists; methodo never writes over your files (choose another name)")
        if not out.parent.is_dir():
            raise BadInput(f"--out {out}: folder {out.parent} does not exist")
    from methodo.experiments.rediagnose import rediagnose

    rep = rediagnose(args.run_dir, data=args.data)
    d = rep.data
    print(f"recomputed from {rep.run_dir}: {', '.join(rep.files)}; data {d['path'] or d['source']} "
          f"({d['digest'][:19]}..., the digest the run recorded)")
    print(f"findings: {len(rep.findings)}" + ("" if rep.findings else " (no problem found)"))
    _print_findings(rep.findings)
    print(f"verdict: {rep.verdict}")
    if out is not None:
        try:
            with open(out, "x", encoding="utf-8") as fh:
                fh.write(json.dumps(rep.to_dict(), indent=2, default=str, ensure_ascii=False) + "\n")
        except FileExistsError:
            raise BadInput(f"--out {out}: exists; methodo never writes over your files (choose another name)") from None
        print(f"details: {out}")
    if not rep.equal:
        raise RunFailed(f"the findings recomputed from {rep.run_dir} differ from the recorded ones")
    return 0


def _add_reproduce_parser(sub) -> None:
    """`reproduce`: re-run a recorded run and compare its numbers."""
    rp = sub.add_parser("reproduce", help="re-run a recorded run (run dir or MLflow run ID) from its config and "
                        "seed, and check the numbers are the same",
                        description="Re-run a run from its recorded config and seed into a new run dir and compare "
                        "every metric: equal bit for bit on the same machine, versions and data; within --tolerance "
                        "where the versions, platform, CPU threads, git commit or data differ (each difference is "
                        "shown). Writes reproduction.json in the new run dir. Exit 0 when reproduced, 3 when not.")
    rp.add_argument("source", metavar="RUN_DIR|MLFLOW_RUN_ID")
    rp.add_argument("--out", metavar="DIR", help="run dir to create (default runs/NAME-reproduce-TIMESTAMP-XXXX)")
    rp.add_argument("--tolerance", type=float, default=1e-6, metavar="T",
                    help="largest absolute metric difference accepted when the environment differs (default 1e-6)")
    rp.add_argument("--tracking-uri", metavar="URI", help="MLflow store to find a run ID in (default: "
                    "MLFLOW_TRACKING_URI, else MLflow's default ./mlflow.db, where methodo runs log)")


def _add_compare_parser(sub) -> None:
    cp = sub.add_parser("compare", help="runs side by side: differing config keys, test metrics with intervals, "
                        "which differences are real, overlaid learning curves",
                        description="Put runs side by side (run dirs, or the finished runs of an MLflow "
                        "experiment): the config keys that differ, the test metrics with their bootstrap intervals, "
                        "and for each run whether it differs from the best one beyond noise (a paired bootstrap of "
                        "the difference when both predicted the same test rows, else whether the intervals "
                        "overlap). Prints a table and the validation-loss curves; --html writes the page with the "
                        "curves drawn.")
    cp.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    cp.add_argument("--experiment", metavar="NAME", help="compare the finished runs of this MLflow experiment")
    cp.add_argument("--tracking-uri", metavar="URI", help="MLflow store of --experiment (default: "
                    "MLFLOW_TRACKING_URI, else ./mlflow.db)")
    cp.add_argument("--metrics", metavar="M1,M2", help="test metrics to show, the first decides the best run "
                    "(default: up to three of accuracy, f1, roc_auc, mae, rmse, r2, iou that all runs have)")
    cp.add_argument("--html", metavar="FILE.html", help="also write the comparison as a self-contained page; "
                    "must not exist")


_SPARK = "▁▂▃▄▅▆▇█"


def cmd_compare(args, parser) -> int:
    from pathlib import Path

    from methodo.errors import BadInput
    from methodo.experiments import compare as C

    if bool(args.run_dirs) == bool(args.experiment):
        parser.error("compare: give RUN_DIR... or --experiment NAME (one of the two)")
    html = Path(args.html) if args.html else None
    if html is not None:
        if html.suffix.lower() != ".html":
            raise BadInput(f"--html {html}: give a file name ending in .html")
        if html.exists() or html.is_symlink():
            raise BadInput(f"--html {html}: exists; methodo never writes over your files (choose another name)")
        if not html.parent.is_dir():
            raise BadInput(f"--html {html}: folder {html.parent} does not exist")
    if len(args.run_dirs) > C.MAX_RUNS:
        raise BadInput(f"compare: {len(args.run_dirs)} run dirs; at most {C.MAX_RUNS}")
    runs = (C.load_experiment(args.experiment, args.tracking_uri) if args.experiment
            else [C.load_run_dir(p) for p in args.run_dirs])
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    cmp = C.compare(runs, metrics)
    fmt = lambda v: "undefined" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    head = ["run", *cmp.params, *cmp.metrics, f"vs best on {cmp.metrics[0]}"]
    table = [head]
    for i, (r, t) in enumerate(zip(cmp.runs, cmp.tests)):
        cells = [r.label + (" (best)" if i == cmp.best else "")] + [fmt(r.params.get(p)) for p in cmp.params]
        for m in cmp.metrics:
            iv = r.intervals.get(m)
            cells.append(fmt(r.test.get(m)) + (f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else ""))
        if t["method"] == "best":
            cells.append("—")
        elif t["significant"] is None:
            cells.append("no interval to test with")
        else:
            d = "" if t["diff"] is None else f"{t['diff']:+.4f} "
            what = "significant" if t["significant"] else "within noise"
            iv = f" [{t['interval'][0]:+.4f}, {t['interval'][1]:+.4f}]" if t["interval"] else ""
            cells.append(f"{d}{what} ({t['method']}{iv})")
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    curves = [(r.label, [h["val_loss"] for h in r.history if "val_loss" in h]) for r in cmp.runs]
    values = [v for _, c in curves for v in c if v == v]
    if values:
        lo, hi = min(values), max(values)
        print(f"validation loss per epoch (▁ = {lo:.4g}, █ = {hi:.4g}):")
        width = max(len(label) for label, _ in curves)
        for label, c in curves:
            spark = "".join(_SPARK[min(7, int(7 * (v - lo) / (hi - lo))) if hi > lo else 0] if v == v else " " for v in c)
            print(f"  {label:<{width}}  {spark}  {fmt(c[-1]) if c else 'no curve'}")
    if html is not None:
        C.write_html(cmp, html)
        print(f"page: {html}")
    return 0


def _add_suggest_parser(sub) -> None:
    sg = sub.add_parser("suggest", help="read the data and print a ready-to-run config, with the reason for each "
                        "choice as a YAML comment (methodo suggest data.csv > exp.yaml && methodo run exp.yaml)",
                        description="Inspect the data (kind, shape, size, target, class balance, categorical and "
                        "missing values, a text column) and print on stdout a config following the course's table "
                        "of architectures per data type: model, split, balancing, metrics, optimizer, schedule, "
                        "early stopping. The config is validated before it is printed.")
    sg.add_argument("data", metavar="DATA_OR_CONFIG", help="a dataset name (methodo list datasets), a CSV file, an "
                    "image or text folder with one subfolder per class, or a config whose data section is kept")
    sg.add_argument("--target", metavar="COLUMN", help="CSV: the column to predict (default: a column named target, "
                    "label, class, y or outcome, else the last one)")
    sg.add_argument("--text", metavar="COLUMN", help="CSV: the column holding the text (default: found when one "
                    "column holds prose)")
    sg.add_argument("--time", metavar="COLUMN", help="CSV: the time column of a series to forecast (default: a column "
                    "named time, date, timestamp, month, ... whose values are distinct dates or increasing numbers)")
    sg.add_argument("--name", help="the run name (default: DATA-MODEL)")


def _add_new_parser(sub) -> None:
    nw = sub.add_parser("new", help="start a structured project: configs/ (base + experiments), data/, runs/, "
                        "notebooks/, src/NAME (your models and datasets, registered into methodo), tests/, CI",
                        description="Write a new project folder laid out as the course recommends. "
                        "`pip install -e .` inside it registers its src/ package with methodo (entry point "
                        "methodo.plugins); `methodo run configs/base.yaml` runs at once on bundled data.")
    nw.add_argument("name", metavar="NAME", help="project name: the folder and the Python package")
    nw.add_argument("--dir", default=".", metavar="PARENT", help="folder to create NAME in (default: here)")


def cmd_new(args) -> int:
    from methodo.experiments.scaffold import files, new_project, package_name

    root = new_project(args.name, parent=args.dir)
    print(f"project {args.name}: {root} ({len(files(args.name))} files)")
    print(f"  configs/base.yaml, configs/experiments/{{wider,own_model}}.yaml, src/{package_name(args.name)}/, tests/")
    print(f"next:\n  cd {root}\n  pip install -e .\n  methodo run configs/base.yaml")
    return 0


def cmd_reproduce(args) -> int:
    from methodo.errors import RunFailed
    from methodo.experiments.reproduce import reproduce

    rep = reproduce(args.source, out=args.out, tolerance=args.tolerance,
                    tracking_uri=args.tracking_uri)
    print(f"\nreproduction of {rep.source}: {rep.run_dir}")
    if rep.environment:
        for d in rep.environment:
            print(f"warning: {d['what']} differs: recorded {d['recorded']}, now {d['now']}", file=sys.stderr)
    else:
        print("environment: same versions, platform, CPU threads, git commit and data digest")
    show = lambda v: "undefined" if v is None else f"{v:.6g}"  # noqa: E731
    equal = sum(m["recorded"] == m["now"] for m in rep.metrics)
    splits = ", ".join(dict.fromkeys(m["split"] for m in rep.metrics))
    print(f"metrics: {len(rep.metrics)} compared ({splits}), {equal} equal bit for bit; test and differing ones:")
    shown = [m for m in rep.metrics if m["split"] == "test" or m["recorded"] != m["now"]]
    width = max((len(f"{m['split']} {m['metric']}") for m in shown), default=6)
    print(f"  {'metric':<{width}}  {'recorded':>12}  {'now':>12}  diff")
    for m in shown:
        diff = "" if m["diff"] is None else ("0" if m["diff"] == 0 else f"{m['diff']:+.3g}")
        print(f"  {m['split'] + ' ' + m['metric']:<{width}}  {show(m['recorded']):>12}  {show(m['now']):>12}  {diff}")
    for o in rep.other:
        if o["recorded"] != o["now"]:
            print(f"  {o['what']}: recorded {o['recorded']}, now {o['now']}")
    why = {"identical": "every metric equal bit for bit, same epochs and findings",
           "within tolerance": f"the environment differs; every metric within {rep.tolerance:g}",
           "differs": "the numbers differ" + ("" if rep.environment else " on the same environment")}
    print(f"verdict: {rep.verdict} ({why[rep.verdict]})\ndetails: {rep.run_dir / 'reproduction.json'}")
    if not rep.reproduced:
        raise RunFailed(f"not reproduced: {rep.source} vs {rep.run_dir}")
    return 0


def cmd_config(args, parser) -> int:
    from methodo import config_doc

    if args.config_command == "show" and args.options:
        key = config_doc.find_key(args.key)
        opts = config_doc.component_options(key.path, args.options)
        width = max((len(n) for n, _ in opts), default=0)
        print(f"{key.path}: options of {key.path.rsplit('.', 1)[-1]} {args.options!r} (default values):")
        for n, default in opts:
            print(f"  {key.path}.{n:<{width}}  {default}")
    elif args.config_command == "show":
        print(config_doc.render_text(config_doc.find_key(args.key)))
    elif args.config_command == "docs":
        text = config_doc.render_markdown()
        if args.out:
            from pathlib import Path

            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {args.out}")
        else:
            print(text, end="")
    else:
        parser.parse_args(["config", "--help"])
    return 0


def cmd_list(what: str, timm: str | None = None) -> int:
    if timm is not None:
        from methodo.errors import BadInput

        if what != "models":
            raise BadInput(f"list {what} --timm: --timm lists timm's architectures; use `methodo list models --timm`")
        from methodo.models.backbones import list_timm

        names = list_timm(timm)
        if not names:
            raise BadInput(f"list models --timm {timm!r}: no timm architecture matches; try a shorter filter, "
                           "e.g. 'resnet*'")
        for n in names:
            print(f"timm:{n}")
        return 0
    from methodo.registry import load_plugins

    load_plugins()
    reg = REGISTRIES.get(what)
    prefixes = [(f"{p.prefix}:NAME", p.help) for p in reg.prefixes()]
    width = max(len(n) for n in reg.names() + [n for n, _ in prefixes])
    for e in reg.entries():
        extra = ""
        if "interval" in e.meta:
            extra = f"  [per {e.meta['interval']}]"
        elif "key" in e.meta:
            extra = f"  [{e.meta['key']}; acts at: {e.meta['stage']}]"
        elif e.meta.get("task"):
            extra = f"  [{e.meta['task']}]"
        elif e.meta.get("tasks"):  # models: the tasks they do
            extra = f"  [{', '.join(e.meta['tasks'])}]"
        elif e.meta.get("stage"):
            extra = f"  [{e.meta['stage']}]"
        elif e.meta.get("kind"):
            extra = f"  [{e.meta['kind']}]"
        print(f"{e.name:<{width}}  {e.help}{extra}")
    for name, help in prefixes:
        print(f"{name:<{width}}  {help}")
    return 0


def _print_findings(findings: list[dict]) -> None:
    for f in findings:
        print(f"  [{f['severity']}] {f['id']}: {f['title']}")
        print(f"      evidence: {', '.join(f'{k}={v}' for k, v in f['evidence'].items() if k != 'certainty')}")
        sure = f["evidence"].get("certainty")
        if isinstance(sure, dict) and sure.get("statement"):
            print(f"      how sure ({sure.get('method')}): {sure['statement']}")
        print(f"      action: {f['action']}")


def cmd_data_inspect(config: str, overrides: list[str], as_json: bool) -> int:
    import json

    from methodo.config import load_config
    from methodo.data.audit import inspect_data

    report = inspect_data(load_config(config, overrides))
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"dataset: {report['description']} ({report['task']}, {report['kind']}, input {report['input_shape']})")
    split = report["split"]
    print(f"split: {split['method']}" + (f" (fold {split['fold']})" if split.get("fold") else ""))
    for s, v in report["splits"].items():
        counts = v.get("class_counts")
        shown = "" if not counts else "  " + " ".join(f"{c}={n}" for c, n in counts.items())
        print(f"  {s:<5} n={v['n']}{shown}")
    findings = report["findings"]
    print(f"findings: {len(findings)}" + ("" if findings else " (no problem found)"))
    _print_findings(findings)
    return 0


def cmd_data_preview(config: str, overrides: list[str], out: str, n: int, copies: int) -> int:
    from pathlib import Path

    from methodo.config import load_config
    from methodo.data import load_dataset, split_dataset
    from methodo.data.augment import gallery
    from methodo.errors import BadInput, ConfigError

    cfg = load_config(config, overrides)
    if not cfg.data.augment:
        raise ConfigError("data.augment: nothing to preview; list augmentations, e.g. data.augment=[flip,rotation]")
    if n < 1 or copies < 1:
        raise BadInput("data preview: --n and --copies must be at least 1")
    ds = load_dataset(cfg.data)
    if ds.kind != "image":
        raise ConfigError(f"data.augment: augmentations work on images; dataset {ds.name!r} is a table")
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise BadInput(f"--out {out}: the gallery is a PNG file; give a name ending in .png")
    if not path.parent.exists():
        raise BadInput(f"--out {out}: folder {path.parent} does not exist")
    rows = split_dataset(ds, cfg.data, cfg.seed, fold=cfg.data.split.fold or (
        1 if cfg.data.split.method == "kfold" else None))["train"]
    gallery(ds, rows, cfg.data.augment, seed=cfg.seed, path=path, n=n, copies=copies)
    print(f"wrote {path}: {min(n, len(rows))} training images × {copies} augmented copies")
    return 0


def cmd_data_label_issues(args) -> int:
    from methodo.errors import BadInput
    from methodo.evaluate.label_issues import label_issues_command

    if args.show < 0:
        raise BadInput(f"--show {args.show}: must be 0 or more")
    res = label_issues_command(args.config, list(args.overrides), folds=args.folds, issues_path=args.issues,
                               fix=args.fix, out=args.out)
    iss = res.issues
    print(f"label issues: {iss.count} of {iss.n} rows ({100 * iss.count / max(iss.n, 1):.1f}%) look mislabeled "
          f"(confident learning over {iss.folds}-fold out-of-sample probabilities, which agree with the given labels "
          f"on {100 * res.accuracy:.1f}% of the rows)")
    shown = iss.rows[:args.show]
    if shown:
        where = any(not res.where[r["row"]].startswith("index ") for r in shown)  # a CSV line, an image file
        table = [("rank", "row", *["where"] * where, "split", "given", "suggested", "p_given", "quality")] + [
            (str(r["rank"]), str(r["row"]), *[res.where[r["row"]]] * where, r["split"], r["given"], r["suggested"],
             f"{r['p_given']:.4f}", f"{r['label_quality']:.4f}") for r in shown]
        widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
        for t in table:
            print("  " + "  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
        if iss.count > len(shown):
            print(f"  ... {iss.count - len(shown)} more in {res.issues_path}")
    print(f"issues: {res.issues_path}")
    if res.out is not None:
        done = "dropped" if args.fix == "drop" else "relabeled"
        print(f"cleaned copy: {res.out} ({res.fixed} rows {done})")
    return 0


def cmd_tune(args) -> int:
    from methodo.tune.study import TuneOptions, tune

    res = tune(TuneOptions(config=args.config, overrides=list(args.overrides), space=args.space, trials=args.trials,
                           timeout=args.timeout, sampler=args.sampler, pruner=args.pruner, objectives=args.objectives,
                           storage=args.storage, study=args.study, workers=args.workers, out=args.out,
                           final_test=args.final_test, reeval_top=args.reeval_top, heartbeat=args.heartbeat,
                           hypergradient=args.hypergradient))
    r = res.record
    counts = " ".join(f"{k}={v}" for k, v in r["counts"].items() if v)
    print(f"study {r['study']}: {r['trials_counted']} trials ({counts}), {r['epochs_total']} epochs, "
          f"{r['wall_s']:.1f} s; sampler {r['sampler']}, pruner {r['pruner']}")
    best = r["best"]
    print(f"best trial {best['number']}: " + ", ".join(f"{k}={v:.6g}" for k, v in best["values"].items()))
    for k, v in best["params"].items():
        print(f"  {k}: {v}")
    if r.get("pareto"):
        print(f"Pareto front: trials {', '.join(str(t['number']) for t in r['pareto'])}")
    ft = r.get("final_test")
    if ft:
        print(f"final test (best config, run once in {res.out / ft['run_dir']}): "
              + ", ".join(f"{k}={v:.4f}" for k, v in ft["test"].items() if v is not None))
    else:
        print("test split: not used (add --final-test to evaluate the best config on it once)")
    findings = r.get("findings") or []
    print(f"findings: {len(findings)}" + ("" if findings else " (no problem found)"))
    _print_findings(findings)
    print(f"best config: {res.out / 'best.yaml'}\nreport: {res.out / 'tune.html'}")
    return 0


def cmd_embed(run_dir: str, method: str) -> int:
    from methodo.evaluate.embeddings import embed_run

    res = embed_run(run_dir, method)
    print(f"{res['n']} test rows, {res['dim']}-d penultimate embeddings → 2-D ({method}); "
          f"{res['wrong']} wrong predictions ringed")
    print(f"figure: {res['figure']}\npoints: {res['csv']}\nreport: {run_dir}/report.html")
    return 0


def cmd_predict(args) -> int:
    from methodo.use.predict import predict_command

    res = predict_command(args.run_dir, list(args.inputs), out=args.out)
    if res.out is not None:
        print(f"predicted {res.rows} inputs with the {res.task} model of {args.run_dir}: {res.out} "
              f"(columns: {', '.join(res.columns)})")
    return 0


def cmd_evaluate(args) -> int:
    from methodo.use.evaluate import FILES, evaluate_run

    rd, ev = evaluate_run(args.run_dir, args.data, out=args.out)
    print(f"evaluated the {ev.task} model of {ev.run_dir} on {ev.data}: {ev.n} rows")
    iv, riv, run = ev.intervals or {}, ev.run_test_intervals or {}, ev.run_test or {}
    band = lambda b: f"[{b[0]:.4f}, {b[1]:.4f}]" if b else ""  # noqa: E731
    show = lambda v: "undefined" if v is None else f"{v:.4f}"  # noqa: E731
    print("metrics (new data [interval] | run's test [interval] | best dummy baseline):")
    for k, v in ev.metrics.items():
        bl = ""
        vals = {b: m.get(k) for b, m in ev.baselines.items() if m.get(k) is not None}
        if vals:
            from methodo.evaluate.metrics import METRICS

            higher = METRICS.entry(k).meta.get("higher_is_better", True) if k in METRICS else True
            name = (max if higher else min)(vals, key=vals.get)
            bl = f"| {vals[name]:.4f} ({name})"
        print(f"  {k:<18} {show(v)} {band(iv.get(k)):<18} | {show(run.get(k)) if k in run else '—':<9} "
              f"{band(riv.get(k)):<18} {bl}")
    if ev.drift.get("skipped"):
        print(f"drift: {ev.drift['skipped']}")
    findings = [f.model_dump() for f in ev.findings]
    print(f"findings: {len(findings)}" + ("" if findings else " (no problem found)"))
    _print_findings(findings)
    print(f"report: {rd.file(FILES['report'])}")
    return 0


def cmd_robustness(args) -> int:
    from methodo.trust.robustness import robustness_command

    rob, where = robustness_command(args.run_dir, args.out, list(args.overrides))
    print(f"{rob['images']} test images (of {rob['sample']['of']}): clean accuracy {rob['clean_accuracy']:.4f}")
    for name, rows in rob["attacks"].items():
        for r in rows:
            budget = f"eps {r['eps']:.4g} ({r['eps'] * 255:.3g}/255)" if "eps" in r else f"{r['pixels']} pixel(s)"
            conf = "" if r["fooled_confidence"] is None else f", fooled with mean confidence {r['fooled_confidence']:.2f}"
            print(f"  {name:<8} {budget:<22} accuracy {r['accuracy']:.4f}  fooled {r['fooled']} of {r['images']} "
                  f"({r['fooled_fraction']:.1%} of those right before){conf}")
    c = rob.get("corruptions")
    if c:
        print(f"corruptions (accuracy at severity 1..5), mean corruption error {c['mce']:.4f} (clean error "
              f"{c['clean_error']:.4f}):")
        for name, acc in c["accuracy"].items():
            print(f"  {name:<15} " + " ".join(f"{a:.3f}" for a in acc))
    print(f"results: {where / 'robustness.json'}\nfigures: {where / 'figures'}")
    return 0


def _print_trust(r) -> None:
    """Fairness and robustness in a few lines: test disparities and per-group selection rates, the mitigations
    side by side, robust accuracy."""
    show = lambda v: "undefined" if v is None else f"{v:.3f}"  # noqa: E731
    for attr, a in ((r.fairness or {}).get("attributes") or {}).items():
        t = a["splits"].get("test") or {}
        iv = t.get("disparity_intervals") or {}
        ds = ", ".join(f"{k.replace('_', ' ')} {show(v)}" + (f" [{iv[k][0]:.3f}, {iv[k][1]:.3f}]" if iv.get(k) else "")
                       for k, v in t.get("disparity", {}).items() if not k.endswith("ratio"))
        key = "selection_rate" if any("selection_rate" in m for m in t["groups"].values()) else "accuracy"
        groups = ", ".join(f"{g} {show(m.get(key))} (n={m['n']})" for g, m in t["groups"].items())
        print(f"fairness (test, {attr}): {ds}; {key.replace('_', ' ')} {groups}")
    mi = (r.fairness or {}).get("mitigation")
    if mi:
        m0 = mi["measures"][0]
        print(f"mitigation ({mi['attribute']}, {mi['constraint'].replace('_', ' ')}): "
              + " | ".join(f"{row['name']} accuracy {show(row['accuracy'])}, {m0.replace('_', ' ')} "
                           f"{show(row['disparity'].get(m0))}" for row in mi["rows"]))
    rob = r.robustness
    if rob:
        parts = [f"{name} " + ", ".join((f"eps {x['eps']:.3g} {x['accuracy']:.3f}" if "eps" in x else
                                         f"{x['pixels']} px fooled {x['fooled_fraction']:.0%}") for x in rows)
                 for name, rows in rob.get("attacks", {}).items()]
        c = rob.get("corruptions")
        print(f"robustness ({rob['images']} test images): clean {rob['clean_accuracy']:.3f}; " + "; ".join(parts)
              + (f"; mean corruption error {c['mce']:.3f}" if c else ""))
        before = rob.get("before_adversarial_training")
        if before:
            print("  before adversarial training: clean " + f"{before['clean_accuracy']:.3f}; " + "; ".join(
                f"{name} " + ", ".join(f"eps {x['eps']:.3g} {x['accuracy']:.3f}" for x in rows if "eps" in x)
                for name, rows in before.get("attacks", {}).items() if name != "onepixel"))


def _print_result(res) -> None:
    """The run's headline on stdout, from its record: status, test metrics beside the best baseline, findings."""
    r = res.record
    test = r.metrics.get("test", {})
    print(f"\nrun dir: {res.run_dir}")
    print(f"status: {r.status}  epochs run: {r.epochs_run} (best epoch {r.best_epoch})  "
          f"duration: {r.duration_s:.1f} s  MLflow run: {r.mlflow_run_id}")
    std = (r.metrics_std or {}).get("test", {})
    if std:
        print(f"k-fold: {r.kfold.folds} folds, test metrics are mean ± std over folds "
              f"(each fold's run dir under {res.run_dir / 'folds'})")
    if test:
        level = (r.bootstrap or {}).get("test").level if (r.bootstrap or {}).get("test") else 0.95
        print(f"test metrics (model [{100 * level:g}% bootstrap interval] | best dummy baseline):")
        iv = (r.intervals or {}).get("test", {})
        why = (r.undefined or {}).get("test", {})
        for k, v in test.items():
            if v is None:
                print(f"  {k:<18} undefined ({why.get(k, 'no value')})")
                continue
            vals = {b: m.get(k) for b, m in r.baselines.items() if m.get(k) is not None}
            bl = ""
            if vals:
                from methodo.evaluate.metrics import METRICS

                higher = METRICS.entry(k).meta.get("higher_is_better", True) if k in METRICS else True
                name = (max if higher else min)(vals, key=vals.get)
                bl = f"| {vals[name]:.4f} ({name})"
            band = f"[{iv[k][0]:.4f}, {iv[k][1]:.4f}]" if iv.get(k) else ""
            spread = f" ± {std[k]:.4f}" if std.get(k) is not None else ""
            print(f"  {k:<18} {v:.4f}{spread} {band:<18} {bl}")
        for split, bases in (r.extra_baselines or {}).items():  # e.g. out-of-domain text
            descr = ((r.data.extra or {}).get(split, {}).get("description", "")) if r.data else ""
            print(f"{split} metrics (model | baselines){': ' + descr if descr else ''}:")
            for k, v in r.metrics[split].items():
                others = "  ".join(f"{b} {m[k]:.4f}" for b, m in bases.items() if m.get(k) is not None)
                print(f"  {k:<18} {'undefined' if v is None else f'{v:.4f}'}  | {others}")
        if r.sample:
            print(f"sample (temperature {r.sample.temperature}): {r.sample.prompt!r} → {r.sample.continuation!r}")
        th = r.threshold
        if th:
            t = th.test
            show = lambda x: "undefined" if x is None else f"{x:.4f}"  # noqa: E731
            print(f"decision threshold {th.value:.3f} ({th.rule}: {th.why}): test precision "
                  f"{show(t['precision'])}, recall {show(t['recall'])}, f1 {show(t['f1'])}")
    _print_trust(r)
    findings = [f.model_dump() for f in r.findings]
    print(f"findings: {len(findings)}" + ("" if findings else " (no problem found)"))
    _print_findings(findings)
    print(f"report: {res.run_dir / 'report.html'}")


def cmd_evaluate_lm(args, parser) -> int:
    """`methodo evaluate-lm`: leaderboard table and/or sliding-window perplexity of a local HF model."""
    import json
    from pathlib import Path

    from methodo.errors import BadInput

    tasks = [t for item in (args.tasks or []) for t in item.split(",") if t]
    if not tasks and not args.perplexity:
        parser.error("evaluate-lm: give --tasks TASK ... and/or --perplexity FILE")
    for flag, v in (("--limit", args.limit), ("--batch-size", args.batch_size), ("--window", args.window),
                    ("--stride", args.stride)):
        if v is not None and v < 1:
            raise BadInput(f"{flag} {v}: must be at least 1")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise BadInput(f"--num-fewshot {args.num_fewshot}: must be 0 or more")
    from methodo.evaluate import lm

    out: dict = {"model": str(args.model_path)}
    name = Path(args.model_path).name or str(args.model_path)
    if args.perplexity:
        path = Path(args.perplexity)
        if not path.is_file():
            raise BadInput(f"--perplexity {path}: file not found")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"--perplexity {path}: not UTF-8 text") from None
        model, tok = lm.load_hf_causal(args.model_path, device=args.device)
        limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 1024)
        window = args.window or limit
        stride = args.stride or max(1, window // 2)
        p = lm.text_perplexity(model, tok, text, window=window, stride=stride)
        out["perplexity"] = {"file": str(path), **p}
        print(f"perplexity of {name} on {path.name}: {p['perplexity']:.3f}  ({p['bits_per_token']:.4f} bits/token, "
              f"{p['bits_per_byte']:.4f} bits/byte)")
        print(f"  {p['tokens']} tokens, {p['scored_tokens']} scored in {p['windows']} windows of {p['window']} "
              f"tokens, stride {p['stride']}")
    if tasks:
        board = lm.run_benchmarks(args.model_path, tasks, limit=args.limit, num_fewshot=args.num_fewshot,
                                  batch_size=args.batch_size, device=args.device)
        out["leaderboard"] = board
        print(lm.format_leaderboard(board, name))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from methodo import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0

    from methodo.errors import BadInput, RunFailed, StopRequested, Terminated

    try:
        if args.command == "run":
            overrides = list(args.overrides)
            config = args.config
            if config is not None and "=" in config and args.resume:
                overrides.insert(0, config)  # `run --resume DIR key=value`: no config file
                config = None
            if config is None and not args.resume:
                parser.error("run: give a CONFIG file, or --resume DIR")
            if args.nproc is not None:  # torchrun starts the workers; rank 0 prints the result
                from methodo.launch.torchrun import launch

                launch(config, overrides, out=args.out, resume=args.resume, nproc=args.nproc,
                       max_restarts=args.max_restarts)
                return 0
            from methodo.launch.torchrun import main_rank
            from methodo.pipeline import run

            res = run(config, overrides, out=args.out, resume=args.resume)
            if main_rank():
                _print_result(res)
            return 0
        if args.command == "lr-find":
            from methodo.pipeline import lr_find

            out_dir, res = lr_find(args.config, list(args.overrides), out=args.out)
            print(f"LR range test: {len(res.lrs)} steps from {res.lrs[0]:.3g} to {res.lrs[-1]:.3g}"
                  + (" (stopped: the loss diverged)" if res.diverged else ""))
            for name, lr in res.suggestions.items():
                mark = "  <- suggested" if name == res.suggestion else ""
                print(f"  {name:<10} {lr:.4g}{mark}")
            print(f"suggested_lr: {res.suggested_lr:.4g}")
            print(f"use it: train.optimizer.lr={res.suggested_lr:.3g} (or train.optimizer.lr=auto)")
            print(f"plot: {out_dir / 'lr_find.png'}\nnumbers: {out_dir / 'lr_find.json'}")
            return 0
        if args.command == "tune":
            return cmd_tune(args)
        if args.command == "list":
            return cmd_list(args.what, args.timm)
        if args.command == "evaluate-lm":
            return cmd_evaluate_lm(args, parser)
        if args.command == "lab":
            return cmd_lab(args)
        if args.command == "report":
            from methodo.report.html import render_report

            print(render_report(args.run_dir))
            return 0
        if args.command == "data" and args.data_command == "inspect":
            return cmd_data_inspect(args.config, list(args.overrides), args.json)
        if args.command == "data" and args.data_command == "preview":
            return cmd_data_preview(args.config, list(args.overrides), args.out, args.n, args.copies)
        if args.command == "data" and args.data_command == "label-issues":
            return cmd_data_label_issues(args)
        if args.command == "robustness":
            return cmd_robustness(args)
        if args.command == "embed":
            return cmd_embed(args.run_dir, args.method)
        if args.command == "merge":
            from methodo.transfer import merge_run

            res = merge_run(args.run_dir)
            print(f"merged adapter into {res['file']} ({res['bytes'] / 1e6:.1f} MB); largest output change on "
                  f"test rows {res['max_abs_diff']:.2g}")
            return 0
        if args.command == "predict":
            return cmd_predict(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "export":
            from methodo.use.export import export_run

            rd, check = export_run(args.run_dir, args.format, out=args.out)
            print(f"exported the model of {args.run_dir} as {args.format}: {rd.path}")
            if "max_abs_diff" in check:
                print(f"check ({check['runtime']}, {check['inputs']}): largest difference from PyTorch "
                      f"{check['max_abs_diff']:.3g} (tolerance {check['tolerance']:g})")
            print("files: " + ", ".join(sorted(p.name for p in rd.path.iterdir() if not p.name.startswith("."))))
            return 0
        if args.command == "config":
            return cmd_config(args, parser)
        if args.command == "reproduce":
            return cmd_reproduce(args)
        if args.command == "diagnose":
            return cmd_diagnose(args)
        if args.command == "compare":
            return cmd_compare(args, parser)
        if args.command == "new":
            return cmd_new(args)
        if args.command == "suggest":
            from methodo.experiments.suggest import suggest

            sys.stdout.write(suggest(args.data, target=args.target, text=args.text, time=args.time,
                                     name=args.name))
            return 0
        if args.command == "slurm":
            return cmd_slurm(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except RunFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except StopRequested as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print("terminated (SIGTERM); the run is marked KILLED", file=sys.stderr)
        return 143
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
