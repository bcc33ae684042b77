"""`methodo tune`: the space language, the study on SQLite, best.yaml, the findings, MLflow parent/child runs.

Every study here is tiny (iris, an MLP, 2-4 epochs, one torch thread), so a trial takes a fraction of a
second; what costs is the interpreter's imports and the report's figures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import EXAMPLES, cli_inproc, write_yaml

IRIS = str(EXAMPLES / "iris.yaml")
TINY = ["train.epochs=3", "train.threads=1", "track.mlflow=false", "train.progress=false", "explain.enabled=false",
        "evaluate.bootstrap=0"]
SPACE = """\
train.optimizer.lr: {float: [1.0e-3, 0.1], log: true}
model.hidden: {choice: [[16], [32, 16]]}
train.optimizer.name: {choice: [sgd, adam]}
train.optimizer.momentum: {float: [0.5, 0.95], when: {train.optimizer.name: sgd}}
"""


def _tune(capsys, tmp_path, *args, space=SPACE, overrides=TINY, out="t"):
    sp = write_yaml(tmp_path / "space.yaml", space)
    return cli_inproc(capsys, "tune", IRIS, *overrides, "--space", str(sp), "--out", str(tmp_path / out), *args)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- the space language


@pytest.mark.parametrize("text,expect", [
    ("lr: 3", "line 1: lr: expected {float: [low, high]}"),
    ("a.b: {float: [1, 0]}", "low must be below high"),
    ("a.b: {float: [0, 1], log: true}", "log: true needs low > 0"),
    ("a.b: {int: [1, 9], step: 2, log: true}", "step and log: true do not combine"),
    ("a.b: {float: [0, 1], int: [0, 1]}", "exactly one of float, int or choice"),
    ("a.b: {choice: []}", "a non-empty list"),
    ("a.b: {choice: [1, 1]}", "listed twice"),
    ("a.b: {float: [0, 1], colour: red}", "unknown option 'colour'"),
    ("a.b: {int: [1.5, 3]}", "two integers"),
    ("x: {float: [0, 1], when: {y: 1}}\ny: {choice: [1, 2]}", "list y first"),
    ("y: {choice: [1, 2]}\nx: {float: [0, 1], when: {y: 3}}", "which y never is"),
    ("model: {choice: [{name: mlp}]}\nmodel.hidden: {choice: [[8]]}", "overlaps the searched key model"),
    ("[1, 2]", "a search space is a mapping"),
])
def test_space_errors_name_the_line_key_and_rule(text, expect):
    from methodo.errors import ConfigError
    from methodo.tune.space import Space

    with pytest.raises(ConfigError, match="^space") as exc:
        Space.from_text(text, "space")
    assert expect in str(exc.value) and "\n" not in str(exc.value)


def test_space_suggests_conditional_keys_and_whole_sub_configs():
    import optuna

    from methodo.tune.space import Space

    sp = Space.from_text(SPACE.replace("model.hidden: {choice: [[16], [32, 16]]}\n", "")
                         + "model: {choice: [{name: mlp, hidden: [8]}, {name: mlp, hidden: [4, 4]}]}\n")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    base = {"seed": 0, "data": {"source": "iris"}, "model": {"name": "mlp"}, "train": {"optimizer": {"name": "adam"}}}
    seen = set()
    for _ in range(30):
        trial = study.ask()
        data, got = sp.suggest(trial, base)
        name = data["train"]["optimizer"]["name"]
        assert ("momentum" in data["train"]["optimizer"]) == (name == "sgd"), data
        assert data["model"] in ({"name": "mlp", "hidden": [8]}, {"name": "mlp", "hidden": [4, 4]})
        assert 1e-3 <= data["train"]["optimizer"]["lr"] <= 0.1
        seen.add((name, json.dumps(data["model"])))
        study.tell(trial, 0.0)
    assert len(seen) == 4  # every optimizer with every sub-config
    assert base["train"]["optimizer"] == {"name": "adam"}  # the base is never changed


def test_a_space_that_makes_an_invalid_config_is_refused_before_any_trial(capsys, tmp_path):
    code, out, err = _tune(capsys, tmp_path, "--trials", "3", space="train.optimizer.lr: {float: [-1, 0.1]}\n")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "line 1: train.optimizer.lr: the value -1" in err and "greater than 0" in err
    code, out, err = _tune(capsys, tmp_path, "--trials", "3", space="model.widht: {int: [8, 16]}\n")
    assert code == 2 and "model.widht" in err and "option not accepted" in err, err
    assert not (tmp_path / "t").exists() and not (tmp_path / "tune.db").exists()  # nothing written


@pytest.mark.parametrize("args,expect", [
    (["--sampler", "annealing"], "--sampler: unknown sampler 'annealing'"),
    (["--pruner", "early"], "--pruner: unknown pruner 'early'"),
    (["--objectives", "val_speed:max"], "'val_speed' is not an objective of a classification run"),
    (["--objectives", "val_accuracy:up"], "the direction is max or min"),
    (["--objectives", "val_accuracy,parameters", "--sampler", "cmaes"], "--sampler cmaes: optimizes one objective"),
    (["--objectives", "val_accuracy,parameters", "--pruner", "median"], "prunes single-objective studies only"),
    (["--pruner", "hyperband:0"], "--pruner: unknown pruner 'hyperband:0'; hyperband:N takes N, the first rung's"),
    (["--pruner", "hyperband:x"], "hyperband:N takes N, the first rung's epoch, a whole number >= 1"),
    (["--pruner", "hyperband:9"], "--pruner hyperband:9: the first rung (epoch 9) is past train.epochs=3"),
    (["--sampler", "grid"], "the grid sampler needs a finite set of values"),
    (["--workers", "0"], "--workers 0: must be between 1 and 256"),
    (["--storage", "ftp://x"], "--storage ftp://x: a sqlite:///FILE"),
])
def test_bad_options_are_one_error_line(capsys, tmp_path, args, expect):
    code, out, err = _tune(capsys, tmp_path, "--trials", "2", *args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expect in err, err
    assert not (tmp_path / "t").exists()


# --------------------------------------------------------------------------- a study


def test_tune_runs_a_study_writes_best_yaml_and_methodo_run_reproduces_it(capsys, tmp_path):
    import methodo

    code, out, err = _tune(capsys, tmp_path, "--trials", "6", "--sampler", "tpe", "--pruner", "none",
                           "--hypergradient", "0.001")
    assert code == 0, err
    t = tmp_path / "t"
    for name in ("tune.json", "trials.csv", "best.yaml", "tune.html"):
        assert (t / name).is_file(), name
    rec = json.loads((t / "tune.json").read_text())
    assert rec["trials_counted"] == 6 and rec["counts"]["COMPLETE"] == 6 and rec["counts"]["RUNNING"] == 0
    assert "validation split only" in rec["test_split"] and rec["final_test"] is None
    rows = _rows(t / "trials.csv")
    assert [int(r["number"]) for r in rows] == list(range(6))
    for r in rows:  # the conditional key is searched exactly when its condition holds
        assert (r["param.train.optimizer.momentum"] != "") == (r["param.train.optimizer.name"] == "sgd"), r
    best = rec["best"]
    values = [float(r["val_accuracy"]) for r in rows]
    assert best["values"]["val_accuracy"] == max(values)
    assert f"best trial {best['number']}: val_accuracy=" in out and "test split: not used" in out
    # best.yaml is the best trial's config; `methodo run` on it gives the same validation number, bit for bit
    res = methodo.run(t / "best.yaml", out=tmp_path / "again")
    assert res.metrics["val"]["accuracy"] == best["values"]["val_accuracy"]
    html = (t / "tune.html").read_text()
    assert 'id="trials"' in html and "Optimization history" in html and "Parameter importances" in html
    assert "validation split only" in html
    # --hypergradient: the best config again from the base LR, its LR adapted online, beside the search's best LR
    hg = rec["hypergradient"]
    assert hg["start_lr"] == 0.01 and hg["best_lr"] == best["params"]["train.optimizer.lr"]
    assert hg["steps"] > 0 and len({lr for _, lr in hg["trajectory"]}) > 1 and hg["final_lr"] != 0.01
    assert "Hypergradient LR trajectory vs the best LR of the search" in html


def test_a_rerun_continues_the_study_and_a_changed_space_is_refused(capsys, tmp_path):
    args = ["--trials", "3", "--study", "s1", "--pruner", "none"]
    assert _tune(capsys, tmp_path, *args)[0] == 0
    code, out, err = _tune(capsys, tmp_path, "--trials", "5", "--study", "s1", "--pruner", "none", out="t2")
    assert code == 0, err
    rec = json.loads((tmp_path / "t2" / "tune.json").read_text())
    assert rec["trials_counted"] == 5 and [t["number"] for t in rec["trials"]] == [0, 1, 2, 3, 4]
    code, out, err = _tune(capsys, tmp_path, *args, space=SPACE.replace("0.95", "0.9"), out="t3")
    assert code == 2 and "--study s1: the study in sqlite:///tune.db was started with another search space" in err


def test_an_invalid_combination_is_a_failed_trial_not_a_crash(capsys, tmp_path):
    # each value alone is valid on an sgd base; adam with a momentum is not: such trials fail, the study goes on
    space = "train.optimizer.name: {choice: [sgd, adam]}\ntrain.optimizer.momentum: {float: [0.1, 0.9]}\n"
    code, out, err = _tune(capsys, tmp_path, "--trials", "8", "--sampler", "random", "--pruner", "none",
                           space=space, overrides=[*TINY, "train.optimizer.name=sgd"])
    assert code == 0, err
    rec = json.loads((tmp_path / "t" / "tune.json").read_text())
    failed = [t for t in rec["trials"] if t["state"] == "FAIL"]
    assert failed and all(t["params"]["train.optimizer.name"] == "adam" for t in failed)
    assert all("invalid config" in t["error"] and "momentum" in t["error"] for t in failed)
    assert rec["trials_counted"] == 8 and rec["counts"]["COMPLETE"] == 8 - len(failed)


def test_grid_search_stops_at_the_grid_size(capsys, tmp_path):
    space = "train.optimizer.lr: {float: [0.01, 0.03], step: 0.01}\nmodel.hidden: {choice: [[8], [16]]}\n"
    code, out, err = _tune(capsys, tmp_path, "--trials", "50", "--sampler", "grid", "--pruner", "none", space=space)
    assert code == 0, err
    assert "the grid has 6 points" in err
    rec = json.loads((tmp_path / "t" / "tune.json").read_text())
    pairs = {(round(t["params"]["train.optimizer.lr"], 6), t["params"]["model.hidden"]) for t in rec["trials"]}
    assert rec["trials_counted"] == 6 and len(pairs) == 6  # every point once


def test_two_objectives_give_a_pareto_front(capsys, tmp_path):
    space = "model.hidden: {choice: [[4], [16], [64, 64]]}\ntrain.optimizer.lr: {float: [0.001, 0.1], log: true}\n"
    code, out, err = _tune(capsys, tmp_path, "--trials", "6", "--sampler", "random",
                           "--objectives", "val_accuracy:max,parameters:min", space=space)
    assert code == 0, err
    rec = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert rec["pruner"] == "none" and rec["objectives"] == ["val_accuracy:max", "parameters:min"]
    done = [t for t in rec["trials"] if t["state"] == "COMPLETE"]
    front = {p["number"] for p in rec["pareto"]}
    for t in done:  # the front is exactly the trials no other trial beats on both objectives
        v = t["values"]
        dominated = any(u["values"]["val_accuracy"] >= v["val_accuracy"] and u["values"]["parameters"] <= v["parameters"]
                        and u["values"] != v for u in done)
        assert (t["number"] in front) == (not dominated), (t, rec["pareto"])
    assert "Pareto front" in (tmp_path / "t" / "tune.html").read_text() and "Pareto front: trials" in out


def test_mlflow_has_a_parent_run_and_one_child_per_trial(capsys, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [o for o in TINY if not o.startswith("track.")] + [f"track.tracking_uri={uri}", "track.experiment=hpo"]
    code, out, err = _tune(capsys, tmp_path, "--trials", "4", "--pruner", "none", overrides=overrides,
                           space="train.optimizer.lr: {float: [0.001, 0.1], log: true}\n")
    assert code == 0, err
    rec = json.loads((tmp_path / "t" / "tune.json").read_text())
    client = MlflowClient(uri)
    parent = client.get_run(rec["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["methodo.best_trial"] == str(rec["best"]["number"])
    exp = client.get_experiment_by_name("hpo")
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(kids) == 4
    for k in kids:
        assert k.info.status == "FINISHED" and k.data.tags["optuna.state"] == "COMPLETE"
        assert "train.optimizer.lr" in k.data.params and "val_accuracy" in k.data.metrics
        hist = client.get_metric_history(k.info.run_id, "val_loss")
        assert [m.step for m in hist] == [1, 2, 3]  # one point per epoch
    best = [k for k in kids if k.data.tags.get("methodo.best") == "true"]
    assert len(best) == 1 and best[0].info.run_id == rec["best"]["mlflow_run_id"]


def test_pruned_trials_stop_early_and_are_marked_in_mlflow_and_the_report(capsys, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = [o for o in TINY if not o.startswith(("track.", "train.epochs"))] + [
        "train.epochs=6", f"track.tracking_uri={uri}", "train.early_stopping=null"]
    code, out, err = _tune(capsys, tmp_path, "--trials", "10", "--sampler", "random", "--pruner", "median",
                           overrides=overrides, space="train.optimizer.lr: {float: [1.0e-5, 0.3], log: true}\n")
    assert code == 0, err
    rec = json.loads((tmp_path / "t" / "tune.json").read_text())
    pruned = [t for t in rec["trials"] if t["state"] == "PRUNED"]
    assert pruned, [(t["state"], t["params"]) for t in rec["trials"]]
    assert all(t["epochs_run"] < 6 for t in pruned)  # stopped by the loop's on_epoch seam
    assert all(t["epochs_run"] == 6 for t in rec["trials"] if t["state"] == "COMPLETE")
    assert rec["epochs_total"] == sum(t["epochs_run"] for t in rec["trials"]) < 60
    client = MlflowClient(uri)
    for t in rec["trials"]:
        run = client.get_run(t["mlflow_run_id"])
        assert run.data.tags["optuna.state"] == t["state"]
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}[t["state"]]
    html = (tmp_path / "t" / "tune.html").read_text()
    assert html.count('class="state-PRUNED"') == len(pruned) and "what the pruner read" in html


# --------------------------------------------------------------------------- methodology: findings, re-runs, final test


def _reeval(search, reruns_by_trial):
    import statistics

    top = [{"number": n, "search": s, "reruns": r, "mean": statistics.fmean(r), "std": statistics.stdev(r)}
           for n, (s, r) in zip(range(len(search)), zip(search, reruns_by_trial))]
    return {"seeds": 3, "top": top}


def test_search_overfits_val_when_the_best_does_not_hold_with_other_seeds():
    from methodo.tune.findings import search_overfits_val
    from methodo.tune.trial import Objective

    acc = Objective("val_accuracy", "maximize")
    lucky = search_overfits_val(_reeval([0.97, 0.95], [[0.93, 0.92, 0.935], [0.95, 0.951, 0.949]]), acc)
    assert lucky.id == "search_overfits_val" and lucky.severity == "high"
    assert lucky.evidence["optimism"] == pytest.approx(0.97 - (0.93 + 0.92 + 0.935) / 3, abs=1e-6)
    assert lucky.evidence["rerun_best_trial"] == 1 and "re-runs better" in lucky.title
    assert search_overfits_val(_reeval([0.95, 0.94], [[0.951, 0.949, 0.95], [0.94, 0.939, 0.94]]), acc) is None
    noisy = _reeval([0.95, 0.90], [[0.99, 0.91, 0.93], [0.85, 0.86, 0.87]])  # a gap within the re-runs' spread
    assert search_overfits_val(noisy, acc) is None
    loss = Objective("val_loss", "minimize")  # lower is better: optimism is the search's value below its re-runs
    assert search_overfits_val(_reeval([0.10, 0.2], [[0.2, 0.21, 0.19], [0.3, 0.31, 0.29]]), loss).severity == "medium"
    assert search_overfits_val(None, acc) is None


def test_space_edge_when_the_best_value_is_at_an_end_of_its_range():
    from methodo.tune.findings import space_edge
    from methodo.tune.space import Space

    sp = Space.from_text(SPACE)
    edge = space_edge(sp, {"train.optimizer.lr": 0.095, "train.optimizer.name": "adam"}, n_complete=10)
    assert edge.id == "space_edge" and edge.evidence["edge"] == "high" and "above 0.1" in edge.action
    low = space_edge(sp, {"train.optimizer.lr": 0.011, "train.optimizer.momentum": 0.51}, n_complete=10)
    assert low.evidence["key"] == "train.optimizer.momentum" and low.evidence["edge"] == "low"
    assert space_edge(sp, {"train.optimizer.lr": 0.01}, n_complete=10) is None  # mid-range in log scale
    assert space_edge(sp, {"train.optimizer.lr": 0.095}, n_complete=2) is None  # too few trials to say


def test_reeval_top_and_final_test_read_the_test_split_once(capsys, tmp_path):
    code, out, err = _tune(capsys, tmp_path, "--trials", "4", "--pruner", "none", "--reeval-top", "2",
                           "--final-test", space="train.optimizer.lr: {float: [0.003, 0.1], log: true}\n")
    assert code == 0, err
    t = tmp_path / "t"
    rec = json.loads((t / "tune.json").read_text())
    assert [r["number"] for r in rec["reeval"]["top"]][0] == rec["best"]["number"]
    assert len(rec["reeval"]["top"]) == 2 and all(len(r["reruns"]) == 3 for r in rec["reeval"]["top"])
    ft = rec["final_test"]
    assert ft["reproduced"] and ft["run_value"] == rec["best"]["values"]["val_accuracy"]
    assert set(ft["test"]) >= {"accuracy", "f1"} and "evaluated once" in rec["test_split"]
    summary = json.loads((t / "best" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["metrics"]["test"]["accuracy"] == ft["test"]["accuracy"]
    assert "final test (best config, run once in" in out
    assert all("test" not in t_["params"] for t_ in rec["trials"])
    html = (t / "tune.html").read_text()
    assert 'id="final-test"' in html and "reproduced exactly" in html and 'id="reeval"' in html


def test_an_out_dir_in_use_is_refused_before_the_study_is_created(capsys, tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "notes.txt").write_text("mine")
    code, out, err = _tune(capsys, tmp_path, "--trials", "2")
    assert code == 2 and err.startswith("error: --out ") and "not empty" in err and err.count("\n") == 1, err
    assert not (tmp_path / "tune.db").exists() and (tmp_path / "t" / "notes.txt").read_text() == "mine"


def test_timeout_stops_starting_trials(capsys, tmp_path):
    code, out, err = _tune(capsys, tmp_path, "--trials", "200", "--timeout", "1", "--pruner", "none")
    assert code == 0, err
    rec = json.loads((tmp_path / "t" / "tune.json").read_text())
    assert 1 <= rec["trials_counted"] < 200 and rec["counts"]["RUNNING"] == 0


def test_hyperband_n_sets_the_first_rung_and_the_last_epoch_is_never_pruned(tmp_path):
    """``--pruner hyperband:N``: Optuna's Hyperband with min_resource N (brackets N..train.epochs); and a
    trial is not pruned after its last epoch (its training is spent: pruning would only drop its score),
    even by a pruner that prunes every trial it is asked about."""
    import optuna

    from methodo.tune.samplers import PRUNERS
    from methodo.tune.study import TuneOptions, open_storage, prepare_context, run_optuna_trial
    from methodo.tune.track import NullStudyTracker

    hb = PRUNERS.get("hyperband:3")(epochs=27)
    assert isinstance(hb, optuna.pruners.HyperbandPruner) and hb._min_resource == 3 and hb._max_resource == 27
    assert PRUNERS.get("hyperband")(epochs=27)._min_resource == 1

    class Always(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return True

    sp = write_yaml(tmp_path / "space.yaml", "train.optimizer.lr: {float: [0.01, 0.1], log: true}")
    got = {}
    for epochs in (1, 3):
        opts = TuneOptions(config=IRIS, overrides=TINY + [f"train.epochs={epochs}"], space=str(sp), trials=1,
                           sampler="random", pruner="hyperband:1", storage=":memory:", study=f"s{epochs}")
        ctx = prepare_context(opts)
        study = optuna.create_study(storage=open_storage(":memory:", 10), direction="maximize", pruner=Always())
        trial = study.ask()
        state, values = run_optuna_trial(ctx, study, trial, ctx.space, NullStudyTracker())
        got[epochs] = (state, trial.user_attrs["epochs_run"], values is not None)
    assert got == {1: ("COMPLETE", 1, True), 3: ("PRUNED", 1, False)}
