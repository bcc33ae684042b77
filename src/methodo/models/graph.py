"""Graph classifiers on packed graphs ``(B, N, N + 1 + F)`` (:mod:`methodo.data.graphs`): adjacency, node
mask, node features → class scores ``(B, classes)``.

The message-passing layers are PyTorch Geometric's dense ones (``DenseGCNConv``, ``DenseGINConv``): they
take a padded batch of adjacency matrices and a node mask, which is how methodo's loop batches every
input (tensor indexing, no collation). PyG's sparse ``GCNConv``/``GINConv`` would need its own ``Batch``
collation and a second data path; the dense layers compute the same updates on graphs this small.
``torch_geometric`` is imported when a model is built.

Examples
--------
>>> import torch
>>> from methodo.models import build_model
>>> net = build_model("gin", input_shape=(10, 14), n_outputs=2, kind="graph", hidden=16)
>>> net(torch.zeros(3, 10, 14)).shape
torch.Size([3, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from methodo.errors import ConfigError
from methodo.models.zoo import MAX_DEPTH, MODELS, positive_int, rate


def _pyg():
    try:
        import warnings

        with warnings.catch_warnings():  # PyG 2.8 scripts a helper with the deprecated torch.jit.script
            warnings.simplefilter("ignore", FutureWarning)
            from torch_geometric.nn import dense
    except ImportError:
        raise ConfigError("graph models need PyTorch Geometric: pip install torch_geometric") from None
    return dense


def _sizes(input_shape) -> tuple[int, int]:
    """``(nodes, features)`` of a packed graph input ``(N, N + 1 + F)``."""
    if len(input_shape) != 2 or input_shape[1] < input_shape[0] + 2:
        raise ConfigError(f"graph models read packed graphs (N, N + 1 + F); got input shape {tuple(input_shape)}")
    n = int(input_shape[0])
    return n, int(input_shape[1]) - n - 1


class GraphNet(nn.Module):
    """Message-passing layers (each followed by ReLU and dropout) → readout over the real nodes (sum or
    mean) → MLP head. ``embed(x)`` is the pooled graph representation."""

    def __init__(self, convs: nn.ModuleList, n_nodes: int, width: int, n_outputs: int, readout: str,
                 dropout: float):
        super().__init__()
        self.n_nodes, self.readout = n_nodes, readout
        self.convs = convs
        self.drop = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, n_outputs))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        n = self.n_nodes
        adj, mask, h = x[..., :n], x[..., n] > 0, x[..., n + 1:]
        for conv in self.convs:
            h = self.drop(torch.relu(conv(h, adj, mask)))
        h = h * mask.unsqueeze(-1)
        pooled = h.sum(1)
        if self.readout == "mean":
            pooled = pooled / mask.sum(1, keepdim=True).clamp_min(1)
        return pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _readout(value) -> str:
    if value not in ("sum", "mean"):
        raise ConfigError(f"readout must be one of 'sum', 'mean' (got {value!r})", key="readout")
    return value


@MODELS.register("gcn", help="graph convolutional network (Kipf & Welling; PyG DenseGCNConv layers), sum or mean "
                 "readout, MLP head", inputs=("graph",), tasks=("graph_classification",))
def gcn(*, input_shape, n_outputs, hidden: int = 64, layers: int = 3, readout: str = "mean",
        dropout: float = 0.0) -> GraphNet:
    n, f = _sizes(input_shape)
    hidden, layers = positive_int(hidden, "hidden"), positive_int(layers, "layers", maximum=MAX_DEPTH)
    dense = _pyg()
    convs = nn.ModuleList(dense.DenseGCNConv(f if i == 0 else hidden, hidden) for i in range(layers))
    return GraphNet(convs, n, hidden, n_outputs, _readout(readout), rate(dropout))


@MODELS.register("gin", help="graph isomorphism network (Xu et al.; PyG DenseGINConv with a 2-layer MLP), sum or "
                 "mean readout, MLP head", inputs=("graph",), tasks=("graph_classification",))
def gin(*, input_shape, n_outputs, hidden: int = 64, layers: int = 3, readout: str = "sum",
        dropout: float = 0.0) -> GraphNet:
    n, f = _sizes(input_shape)
    hidden, layers = positive_int(hidden, "hidden"), positive_int(layers, "layers", maximum=MAX_DEPTH)
    dense = _pyg()

    def mlp(cin: int) -> nn.Module:
        return nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    convs = nn.ModuleList(dense.DenseGINConv(mlp(f if i == 0 else hidden), train_eps=True) for i in range(layers))
    return GraphNet(convs, n, hidden, n_outputs, _readout(readout), rate(dropout))
