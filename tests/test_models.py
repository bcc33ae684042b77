"""Contract over every registered model: sized from the data, right output shape, embeddings."""

from __future__ import annotations

import pytest
import torch

from methodo.errors import ConfigError
from methodo.models import MODELS, build_model, model_tasks

ROW_MODELS = [n for n in MODELS.names() if "classification" in model_tasks(n)
              and "image" in MODELS.entry(n).meta.get("inputs", ("image", "tabular"))]


@pytest.mark.parametrize("name", ROW_MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28)])
def test_every_model_sizes_itself_from_image_shape(name, shape):
    net = build_model(name, input_shape=shape, n_outputs=7, kind="image")
    out = net(torch.randn(4, *shape))
    assert out.shape == (4, 7)
    emb = net.embed(torch.randn(4, *shape))
    assert emb.ndim == 2 and emb.shape[0] == 4
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_mlp_on_tables_and_regression_head():
    net = build_model("mlp", input_shape=(13,), n_outputs=1, kind="tabular", hidden=[8])
    assert net(torch.randn(5, 13)).shape == (5, 1)
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [8, 1]


@pytest.mark.parametrize("name", ["cnn", "resnet"])
def test_image_models_refuse_tables(name):
    with pytest.raises(ConfigError, match=r"needs image data but the dataset is tabular; choose 'mlp'"):
        build_model(name, input_shape=(4,), n_outputs=3, kind="tabular")


def test_model_options_are_checked():
    with pytest.raises(ConfigError, match="option not accepted by model 'cnn'") as exc:
        build_model("cnn", input_shape=(1, 8, 8), n_outputs=3, kind="image", depth=3)
    assert exc.value.key == "depth"
    net = build_model("cnn", input_shape=(1, 8, 8), n_outputs=3, kind="image", width=8, dropout=0.5)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


def test_resnet_has_residual_blocks():
    from methodo.models.zoo import BasicBlock

    net = build_model("resnet", input_shape=(3, 32, 32), n_outputs=10, kind="image", blocks=2)
    assert sum(isinstance(m, BasicBlock) for m in net.modules()) == 6  # 3 stages × 2 blocks
