"""Graph classification: one class per graph (a graph is one row, :mod:`methodo.data.graphs`).

Chosen over node classification because a graph per row is what every stage already handles: splits
by row (stratified), batches by tensor indexing, classification's loss, metrics, dummy baselines,
tables, figures and prediction files. Node classification on one graph would need the split to be
masks over the nodes of a single row, which no other stage knows. The spec is classification's, with
its own name; what does not apply to packed graphs is off: the scikit-learn reference model (it would
read the adjacency as flat features) and captum explanations.
"""

from __future__ import annotations

import dataclasses

from methodo.tasks.base import TASKS
from methodo.tasks.classification import SPEC as _CLASSIFICATION

SPEC = dataclasses.replace(
    _CLASSIFICATION, name="graph_classification", reference=False, metrics_of="classification",
    per_row=False,  # one output per graph, but the row models (mlp, cnn, ...) read no graphs: gcn and gin say tasks=
    explain="explanations are drawn for images and tables, not graphs",
    help="one class per graph: cross-entropy, epoch score accuracy (classification's metrics and baselines)")
TASKS.register(SPEC.name, SPEC, help=SPEC.help)
