"""The structure-blind baseline of a graph run: mean-pooled node features + an MLP (scikit-learn), trained and
tested on the run's own split (``splits.csv``) of the same generated graphs. A model that beats it used the
edges, not the features.

    python examples/graph_structure_blind.py RUN_DIR
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import yaml
from sklearn.neural_network import MLPClassifier

from methodo.config import validate
from methodo.data import load_dataset
from methodo.data.graphs import unpack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    run = ap.parse_args().run_dir
    cfg = validate(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")))
    ds = load_dataset(cfg.data)
    rows = list(csv.DictReader((run / "splits.csv").open(encoding="utf-8")))
    idx = {s: np.array([int(r["row"]) for r in rows if r["split"] == s]) for s in ("train", "test")}
    _, mask, feats = unpack(ds.X, ds.X.shape[1])
    pooled = feats.sum(1) / mask.sum(1, keepdims=True)
    clf = MLPClassifier((32,), max_iter=500, random_state=cfg.seed).fit(pooled[idx["train"]], ds.y[idx["train"]])
    print(f"structure-blind (mean-pooled node features + MLP) test accuracy: "
          f"{clf.score(pooled[idx['test']], ds.y[idx['test']]):.4f} on {len(idx['test'])} graphs")


if __name__ == "__main__":
    main()
