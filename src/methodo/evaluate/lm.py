"""Language-model evaluation: sampling from methodo's own models; sliding-window perplexity and
lm-evaluation-harness benchmarks for Hugging Face causal models (``methodo evaluate-lm``)."""

from __future__ import annotations

import torch


@torch.no_grad()
def sample_text(model, context: torch.Tensor, vocab: list[str], *, seed: int, prompt_len: int = 64,
                n: int = 200, temperature: float = 0.8) -> dict[str, str]:
    """Continue the first ``prompt_len`` tokens of ``context`` by ``n`` sampled tokens.

    Sampling draws from ``softmax(logits / temperature)`` with a generator seeded by ``seed``, so
    the sample is reproducible. Returns ``{"prompt", "continuation", "temperature"}``.
    """
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    prompt_len = min(prompt_len, len(context))
    ids = context[:prompt_len].tolist()
    max_len = getattr(model, "max_len", None) or len(context)
    for _ in range(n):
        window = torch.tensor(ids[-max_len:], device=device)[None]
        logits = model(window)[0, -1].float().cpu() / temperature
        ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=gen)))
    text = lambda xs: "".join(vocab[i] for i in xs)
    return {"prompt": text(ids[:prompt_len]), "continuation": text(ids[prompt_len:]), "temperature": temperature}


# --------------------------------------------------------------------------- Hugging Face causal models

LLM_EXTRA = "pip install 'methodo[llm]' (transformers, tokenizers, lm-eval)"
# `--tasks leaderboard`: the six benchmarks of the (first) Open LLM Leaderboard
LEADERBOARD = ["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande", "gsm8k"]
# the metric each leaderboard benchmark is ranked by; other tasks: acc_norm, acc, exact_match, then any
LEADERBOARD_METRIC = {"arc_challenge": "acc_norm", "arc_easy": "acc_norm", "hellaswag": "acc_norm", "mmlu": "acc",
                      "truthfulqa_mc2": "acc", "winogrande": "acc", "gsm8k": "exact_match"}
_PREFERRED = ("acc_norm", "acc", "exact_match", "mc2", "f1")


def _need(module: str):
    import importlib

    from methodo.errors import BadInput

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BadInput(f"evaluate-lm needs the `{module.split('.')[0]}` package: {LLM_EXTRA}") from None


def load_hf_causal(path, *, device: str = "cpu"):
    """A local Hugging Face causal LM and its tokenizer from a ``save_pretrained`` folder (no download)."""
    from pathlib import Path

    from methodo.errors import BadInput

    p = Path(path)
    if not (p / "config.json").is_file():
        raise BadInput(f"MODEL_PATH {p}: not a Hugging Face model folder (no config.json); save one with "
                       "model.save_pretrained(PATH) and tokenizer.save_pretrained(PATH)")
    transformers = _need("transformers")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise BadInput(f"MODEL_PATH {p}: cannot load a causal language model and its tokenizer "
                       f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), tok


@torch.no_grad()
def sliding_window_nll(model, ids: torch.Tensor, *, window: int, stride: int) -> tuple[float, int, int]:
    """Summed negative log-likelihood (nats) of ``ids`` (1-D) scored in windows of ``window`` tokens
    moved by ``stride``; returns ``(nll, tokens scored, windows)``.

    Each token is scored once, by the window that ends nearest after it, so with ``stride < window``
    every scored token sees at least ``window - stride`` tokens of context. With ``stride == window``
    the windows are non-overlapping chunks: a token early in a chunk sees little context, and the
    first token of each chunk cannot be scored at all (it has none) — which is why overlapping
    windows give a lower, more honest perplexity (the Hugging Face "perplexity of fixed-length
    models" method).
    """
    if not 1 <= stride <= window:
        raise ValueError(f"need 1 <= stride <= window (got stride={stride}, window={window})")
    device = next(model.parameters()).device
    n = len(ids)
    nll, scored, n_windows, prev_end = 0.0, 0, 0, 0
    for begin in range(0, max(n - 1, 1), stride):
        end = min(begin + window, n)
        first = max(prev_end, begin + 1)  # first position to score: not yet scored and with context
        if first < end:
            chunk = ids[begin:end].to(device)[None]
            logp = model(chunk).logits[0, :-1].float().log_softmax(-1)  # predicts positions begin+1 .. end-1
            targets = chunk[0, 1:]
            tok_logp = logp.gather(-1, targets[:, None]).squeeze(-1)[first - begin - 1:]
            nll -= float(tok_logp.sum())
            scored += len(tok_logp)
            n_windows += 1
        prev_end = end
        if end == n:
            break
    return nll, scored, n_windows


def text_perplexity(model, tokenizer, text: str, *, window: int, stride: int) -> dict:
    """Sliding-window perplexity of ``text``: tokens, scored tokens, windows, NLL, perplexity, bits."""
    import math

    from methodo.errors import BadInput

    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if limit and window > limit:
        raise BadInput(f"--window {window}: the model reads at most {limit} positions; use --window {limit} or less")
    if stride > window:
        raise BadInput(f"--stride {stride}: must be at most --window {window} (a stride beyond the window "
                       "would skip tokens)")
    if len(ids) < 2:
        raise BadInput("--perplexity: the text has fewer than 2 tokens; nothing to predict")
    nll, scored, n_windows = sliding_window_nll(model, ids, window=window, stride=stride)
    mean = nll / scored
    return {"tokens": len(ids), "scored_tokens": scored, "windows": n_windows, "window": window, "stride": stride,
            "nll": nll, "perplexity": math.exp(mean), "bits_per_token": mean / math.log(2),
            # per byte: the mean over scored tokens, spread over the text's bytes (comparable across tokenizers;
            # non-overlapping chunks leave some tokens unscored, so the summed NLL alone would be too low)
            "bits_per_byte": mean * len(ids) / math.log(2) / len(text.encode("utf-8"))}


# --------------------------------------------------------------------------- lm-evaluation-harness


def local_tasks_dir(into):
    """Copy methodo's own lm-eval task files into ``into`` with absolute data paths; returns the folder."""
    from pathlib import Path

    import yaml

    here = Path(__file__).with_name("lm_tasks")
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    for src in sorted(here.glob("*.yaml")):
        cfg = yaml.safe_load(src.read_text())
        files = cfg.get("dataset_kwargs", {}).get("data_files", {})
        for split, name in files.items():
            files[split] = str((here / name).resolve())
        (into / src.name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return into


def local_task_names() -> list[str]:
    """The lm-eval tasks that ship with methodo (``evaluate/lm_tasks/*.yaml``)."""
    from pathlib import Path

    import yaml

    return sorted(yaml.safe_load(p.read_text())["task"] for p in Path(__file__).with_name("lm_tasks").glob("*.yaml"))


def _pick_metric(task: str, res: dict) -> tuple[str, str] | None:
    """``(metric name, result key)`` of the score to rank ``task`` by, e.g. ``("acc_norm", "acc_norm,none")``."""
    numeric = {k: v for k, v in res.items() if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
    by_name: dict[str, str] = {}
    for key in numeric:
        by_name.setdefault(key.split(",")[0], key)
    for name in (LEADERBOARD_METRIC.get(task), *_PREFERRED):
        if name in by_name:
            return name, by_name[name]
    return (next(iter(by_name)), by_name[next(iter(by_name))]) if by_name else None


def leaderboard_rows(results: dict, tasks: list[str], n_samples: dict | None = None) -> dict:
    """Score per requested task (in %, like the Open LLM Leaderboard) and their plain average."""
    rows = []
    for t in tasks:
        res = results.get(t, {})
        picked = _pick_metric(t, res)
        if picked is None:
            continue
        name, key = picked
        stderr = res.get(key.replace(",", "_stderr,", 1))
        rows.append({"task": t, "metric": name, "score": 100 * float(res[key]),
                     "stderr": None if not isinstance(stderr, (int, float)) else 100 * float(stderr),
                     "n": (n_samples or {}).get(t)})
    avg = sum(r["score"] for r in rows) / len(rows) if rows else None
    return {"tasks": rows, "average": avg}


def format_leaderboard(board: dict, model_name: str) -> str:
    """A Markdown table: one row per task, then the average."""
    lines = ["| model | task | metric | score (%) | ± stderr | n |", "|---|---|---|---:|---:|---:|"]
    for r in board["tasks"]:
        se = "" if r["stderr"] is None else f"{r['stderr']:.2f}"
        lines.append(f"| {model_name} | {r['task']} | {r['metric']} | {r['score']:.2f} | {se} | {r['n'] or ''} |")
    if board["average"] is not None:
        lines.append(f"| {model_name} | **average** | | **{board['average']:.2f}** | | |")
    return "\n".join(lines)


def run_benchmarks(path, tasks: list[str], *, limit: int | None = None, num_fewshot: int | None = None,
                   batch_size: int = 8, device: str = "cpu", seed: int = 0) -> dict:
    """Run lm-evaluation-harness ``tasks`` on the local model at ``path``; the leaderboard rows."""
    import difflib
    import logging
    import tempfile

    from methodo.errors import BadInput

    load_hf_causal(path)  # a clear error before the harness starts
    lm_eval = _need("lm_eval")
    from lm_eval.tasks import TaskManager, get_task_dict

    expanded = [t for name in tasks for t in (LEADERBOARD if name == "leaderboard" else [name])]
    for name in ("lm_eval", "lm-eval", "datasets", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="methodo-lm-tasks-") as tmp:
        # indexing lm-eval's thousands of task files takes a while: only when a public task is asked for
        public = any(t not in local_task_names() for t in expanded)
        tm = TaskManager(include_path=str(local_tasks_dir(tmp)), include_defaults=public, verbosity="ERROR")
        known = set(tm.all_tasks)
        for t in expanded:
            if t not in known:
                close = difflib.get_close_matches(t, known, n=3)
                hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "see `lm_eval --tasks list`"
                raise BadInput(f"--tasks: unknown lm-eval task {t!r}; {hint}")
        # 1. Build the tasks: this is where each task's data set is read (and downloaded when online).
        task_dict = {}
        for t in expanded:
            try:
                task_dict.update(get_task_dict([t], tm))
            except Exception as exc:  # noqa: BLE001 - datasets/hub raise many kinds; all mean "no data"
                raise BadInput(_missing_data_message(t, tm, exc)) from None
        # 2. Score the model on them.
        out = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(path), "tokenizer": str(path)},
            tasks=list(task_dict.values()), num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
            device=device, task_manager=tm, log_samples=False, random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=1000, verbosity="ERROR")
    n = {t: v.get("effective", v.get("original")) for t, v in out.get("n-samples", {}).items()}
    board = leaderboard_rows(out["results"], expanded, n)
    board["versions"] = {t: out.get("versions", {}).get(t) for t in expanded}
    board["config"] = {"limit": limit, "num_fewshot": num_fewshot, "batch_size": batch_size, "seed": seed}
    return board


def _task_dataset(tm, task: str, depth: int = 0) -> tuple[str, str | None] | None:
    """``(dataset_path, dataset_name)`` the task reads (a group: its first subtask's), or None."""
    from pathlib import Path

    import yaml

    entry = tm.task_index.get(task)
    if entry is None or depth > 4:
        return None
    cfg = getattr(entry, "cfg", None)
    if cfg is None and getattr(entry, "tags", None) and getattr(entry, "yaml_path", 1) is None:  # a tag: its tasks
        return _task_dataset(tm, sorted(entry.tags)[0], depth + 1)
    if not isinstance(cfg, dict):  # older lm-eval: a dict holding the YAML path
        class _Loader(yaml.SafeLoader):  # task YAMLs carry `!function` tags; their values do not matter here
            pass

        _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
        path = entry.get("yaml_path") if isinstance(entry, dict) else getattr(entry, "yaml_path", None)
        cfg = yaml.load(Path(path).read_text(), Loader=_Loader) or {} if path else {}
    if cfg.get("dataset_path"):
        return cfg["dataset_path"], cfg.get("dataset_name")
    subs = cfg.get("task")
    if isinstance(subs, list) and subs:
        first = subs[0] if isinstance(subs[0], str) else (subs[0] or {}).get("task")
        return _task_dataset(tm, first, depth + 1) if isinstance(first, str) else None
    return None


def _missing_data_message(task: str, tm, exc: Exception) -> str:
    """One line: which data set the task reads, where to put it, and what went wrong."""
    where = ""
    try:
        found = _task_dataset(tm, task)
    except Exception:  # noqa: BLE001 - the hint is best effort; the error line stays
        found = None
    if found:
        args = ", ".join(repr(a) for a in found if a)
        where = (f" it reads the Hugging Face dataset {args}: on a machine with network run "
                 f"`python -c \"import datasets; datasets.load_dataset({args})\"`, copy the Hugging Face cache "
                 "(~/.cache/huggingface, or $HF_HOME) to the same place here, and run again with HF_DATASETS_OFFLINE=1;")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return f"--tasks {task}: its data set is not available here (offline or not in the cache);{where} ({type(exc).__name__}: {first})"
