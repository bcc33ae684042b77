"""Graph datasets: one graph per row, padded to a fixed number of nodes so the loop batches them by
tensor indexing like any other input.

A row of ``X`` is ``(N, N + 1 + F)`` float32 for a graph of at most ``N`` nodes with ``F`` features each:
columns ``[:N]`` the adjacency matrix (symmetric, 0/1, no self-loops), column ``N`` the node mask (1 for
a real node, 0 for padding), columns ``N + 1:`` the node features (0 on padding). :func:`unpack` splits a
batch back into ``(adjacency, mask, features)``.

``graph_cycles`` is generated with a known, purely structural label: a connected graph of n nodes
contains a cycle exactly when it has at least n edges. Class ``tree``: a random tree (each new node joins
a random earlier one); class ``cycle``: the same kind of tree plus 1 to 3 extra edges between nodes that
were not yet linked, which closes at least one cycle. Both classes draw their sizes from the same range
and their node features from the same distribution (a constant 1, then Gaussian noise), so features alone
(mean-pooled over the nodes, say) carry no information about the label: only the structure does.

Examples
--------
>>> from methodo.data.graphs import make_graph_cycles, unpack
>>> X, y = make_graph_cycles(n=4, max_nodes=10, features=3, seed=0)
>>> X.shape, y.tolist()
((4, 10, 14), [0, 1, 0, 1])
>>> adj, mask, feats = unpack(X, 10)
>>> bool((adj == adj.transpose(0, 2, 1)).all()), int(mask[0].sum()) <= 10
(True, True)
"""

from __future__ import annotations

import numpy as np

from methodo.data.dataset import DATASETS, Dataset
from methodo.errors import DataError

CLASSES = ["tree", "cycle"]


def unpack(X, n_nodes: int):
    """``(adjacency (B, N, N), mask (B, N), features (B, N, F))`` of a packed batch (numpy or torch)."""
    return X[..., :n_nodes], X[..., n_nodes], X[..., n_nodes + 1:]


def make_graph_cycles(*, n: int = 600, min_nodes: int = 6, max_nodes: int = 16, features: int = 4,
                      extra_edges: tuple[int, int] = (1, 3), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: ``n`` packed graphs, classes alternating (half trees, half with cycles)."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, max_nodes, max_nodes + 1 + features), dtype=np.float32)
    y = np.arange(n, dtype=np.int64) % 2
    for i in range(n):
        k = int(rng.integers(min_nodes, max_nodes + 1))
        adj = np.zeros((k, k), dtype=np.float32)
        for v in range(1, k):  # a random tree: node v joins a random earlier node
            u = int(rng.integers(0, v))
            adj[u, v] = adj[v, u] = 1
        if y[i] == 1:  # extra edges (1 to 3 by default), each closing a cycle
            extra = int(rng.integers(extra_edges[0], extra_edges[1] + 1))
            free = np.argwhere(np.triu(1 - adj, 1) > 0)
            for u, v in free[rng.choice(len(free), size=min(extra, len(free)), replace=False)]:
                adj[u, v] = adj[v, u] = 1
        perm = rng.permutation(k)  # no node order gives the class away
        X[i, :k, :k] = adj[np.ix_(perm, perm)]
        X[i, :k, max_nodes] = 1.0
        X[i, :k, max_nodes + 1] = 1.0  # a constant feature: what a node "is" says nothing
        X[i, :k, max_nodes + 2:] = rng.normal(size=(k, features - 1))
    return X, y


@DATASETS.register("graph_cycles", help="generated graphs: trees vs graphs with a cycle (same sizes, uninformative "
                   "node features: only the structure tells them apart)", task="graph_classification", kind="graph")
def load_graph_cycles(data_cfg, *, audit: bool = False, n: int = 600, min_nodes: int = 6, max_nodes: int = 16,
                      features: int = 4, seed: int = 0) -> Dataset:
    """Options (``data.options``): ``n`` graphs, ``min_nodes``..``max_nodes`` nodes each, ``features`` per node
    (the first a constant 1, the others Gaussian noise), the generator's ``seed``."""
    if not (isinstance(n, int) and n >= 20 and 3 <= min_nodes <= max_nodes <= 256 and 1 <= features <= 64):
        raise DataError(f"data.options: graph_cycles needs n >= 20, 3 <= min_nodes <= max_nodes <= 256 and "
                        f"1 <= features <= 64 (got n={n}, min_nodes={min_nodes}, max_nodes={max_nodes}, "
                        f"features={features})")
    X, y = make_graph_cycles(n=n, min_nodes=min_nodes, max_nodes=max_nodes, features=features, seed=seed)
    names = [f"adj_{j}" for j in range(max_nodes)] + ["node_mask"] + [f"feature_{j}" for j in range(features)]
    return Dataset("graph_cycles", "graph_classification", "graph", X, y, names, list(CLASSES),
                   f"generated graphs: {n} graphs of {min_nodes}-{max_nodes} nodes, {features} node features "
                   "(uninformative); label: tree or contains a cycle")
