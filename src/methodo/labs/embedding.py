"""Lab `embedding`: what training does to a network's internal representation. The same network — an ``mlp``
with hidden layers of 64 and 32 units on scikit-learn's digits (8×8 images, 10 classes) — is looked at twice:
as trained by methodo's training loop, and untrained (its random initial weights). For each, the 32-d inputs of
its last layer (the penultimate-layer embeddings, what ``methodo embed`` reads) on the test images are projected
to 2-D with methodo's projection (PCA and t-SNE, :func:`methodo.evaluate.embeddings.project`), and the
separation of the classes in the 2-D map is scored: the silhouette of the true classes, and the accuracy of a
5-nearest-neighbour vote in the map. The trained network's embeddings form one cluster per class; the untrained
one's do not (a nearest-neighbour vote still beats chance there: similar images stay close through random
layers, but the classes do not gather into clusters)."""

from __future__ import annotations

import numpy as np

from methodo.labs import Lab, LabContext, step

HIDDEN = [64, 32]
METHODS = ("pca", "tsne")
MODELS = ("trained", "untrained")


@step
def train_network(ctx: LabContext):
    """**Train, and keep an untrained twin.** `mlp` [64, 32] on `digits` (1797 images, a stratified 60/20/20
    split), Adam at 0.005, 15 epochs in batches of 64, by methodo's training loop. The untrained twin is the
    same architecture built by `methodo.models.build_model` after seeding with the lab's seed: the very weights
    the training started from (methodo seeds the initialization with the run's seed). Both predict the test
    images: the trained network is accurate, the untrained one at chance."""
    from methodo.evaluate.metrics import compute_metrics, predict
    from methodo.models import build_model
    from methodo.seed import seed_everything

    prep, _ = ctx.train("digits", {
        "data": {"source": "digits", "split": {"method": "stratified", "val": 0.2, "test": 0.2}},
        "model": {"name": "mlp", "hidden": HIDDEN, "dropout": 0.0},
        "train": {"epochs": 15, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.005}, "early_stopping": None}})
    seed_everything(ctx.seed)
    untrained = build_model(prep.cfg.model.name, input_shape=prep.data.input_shape, n_outputs=prep.data.n_outputs,
                            kind=prep.ds.kind, task=prep.ds.task, **prep.cfg.model.options)
    X, y = prep.data.tensors["test"]
    ctx.state.update(models={"trained": prep.model, "untrained": untrained}, X=X, y=y.numpy(),
                     classes=prep.ds.class_names)
    acc = {name: compute_metrics(prep.data.task, predict(m, X, task=prep.data.task), y.numpy(), 10,
                                 names=["accuracy"])["accuracy"] for name, m in ctx.state["models"].items()}
    return ctx.record(test_rows=int(len(y)), classes=len(prep.ds.class_names),
                      trained_test_accuracy=acc["trained"], untrained_test_accuracy=acc["untrained"])


@step
def embed_and_score(ctx: LabContext):
    """**Embed, project, score.** `methodo.evaluate.embeddings.penultimate` takes the inputs of each network's last
    linear layer on the test images (32 numbers per image); `project` standardizes them and maps them to 2-D,
    by PCA (a linear projection) and by t-SNE (which keeps neighbourhoods). In each 2-D map we score how well
    the true classes separate: the silhouette (scikit-learn's `silhouette_score`: from −1 to 1, near 0 for
    classes that overlap, high for tight, distinct clusters) and the 5-fold cross-validated accuracy of a
    5-nearest-neighbour vote in the map."""
    import sklearn.manifold  # noqa: F401 - load its OpenMP runtime here, so the one-thread limit below covers it
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from threadpoolctl import threadpool_limits

    from methodo.evaluate.embeddings import penultimate, project

    X, y = ctx.state["X"], ctx.state["y"]
    out, points = {}, {}
    with threadpool_limits(1):
        for name in MODELS:
            E, _ = penultimate(ctx.state["models"][name], X)
            out[name] = {"dim": int(E.shape[1])}
            for method in METHODS:
                P = project(E, method, seed=ctx.seed)
                points[(name, method)] = P
                out[name][method] = {
                    "silhouette": float(silhouette_score(P, y)),
                    "knn_accuracy": float(cross_val_score(KNeighborsClassifier(5), P, y, cv=5).mean())}
    ctx.state["points"] = points
    return ctx.record(**out)


@step
def plot(ctx: LabContext):
    """**Figure.** The 2-D maps of the test embeddings, colored by true class (each class's label at its
    median): trained (top) and untrained (bottom), PCA (left) and t-SNE (right), with their scores."""
    import matplotlib.pyplot as plt

    n = ctx.numbers
    y, classes = ctx.state["y"], ctx.state["classes"]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for i, name in enumerate(MODELS):
        for j, method in enumerate(METHODS):
            ax = axes[i, j]
            P = ctx.state["points"][(name, method)]
            ax.scatter(P[:, 0], P[:, 1], c=[cmap(int(c)) for c in y], s=7)
            for c in np.unique(y):
                mx, my = np.median(P[y == c], axis=0)
                ax.text(mx, my, classes[int(c)], fontsize=11, weight="bold", ha="center", va="center",
                        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "alpha": 0.6, "lw": 0})
            s = n[name][method]
            ax.set_title(f"{name}, {'PCA' if method == 'pca' else 't-SNE'}: silhouette {s['silhouette']:.2f}, "
                         f"5-NN {s['knn_accuracy']:.2f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    ctx.figure(fig, "embedding")


def conclude(ctx: LabContext):
    n = ctx.numbers
    tr, un = n["trained"], n["untrained"]
    checks = {
        "the trained network is accurate (test accuracy ≥ 0.9), the untrained one near chance (≤ 0.25)":
            n["trained_test_accuracy"] >= 0.9 and n["untrained_test_accuracy"] <= 0.25,
        "t-SNE: the trained embeddings form class clusters (silhouette ≥ 0.4), the untrained do not (< 0.25)":
            tr["tsne"]["silhouette"] >= 0.4 and un["tsne"]["silhouette"] < 0.25,
        "t-SNE: classes separate better after training (5-NN accuracy ≥ untrained + 0.1)":
            tr["tsne"]["knn_accuracy"] >= un["tsne"]["knn_accuracy"] + 0.1,
        "PCA: the same, in a linear projection (silhouette ≥ untrained + 0.1, 5-NN ≥ untrained + 0.15)":
            tr["pca"]["silhouette"] >= un["pca"]["silhouette"] + 0.1
            and tr["pca"]["knn_accuracy"] >= un["pca"]["knn_accuracy"] + 0.15,
    }
    sentence = (f"In 2-D, the penultimate-layer embeddings of the trained network (test accuracy "
                f"{n['trained_test_accuracy']:.3f}) cluster by class — t-SNE silhouette {tr['tsne']['silhouette']:.2f}, "
                f"5-NN accuracy {tr['tsne']['knn_accuracy']:.2f}; PCA {tr['pca']['silhouette']:.2f} and "
                f"{tr['pca']['knn_accuracy']:.2f} — while those of the same network untrained (accuracy "
                f"{n['untrained_test_accuracy']:.3f}) do not: t-SNE silhouette {un['tsne']['silhouette']:.2f}, 5-NN "
                f"{un['tsne']['knn_accuracy']:.2f}; PCA {un['pca']['silhouette']:.2f} and "
                f"{un['pca']['knn_accuracy']:.2f}.")
    return sentence, checks


LAB = Lab("embedding", "Embeddings: what training does to the representation",
          "Projected to 2-D, the penultimate-layer embeddings of a trained network cluster by class; those of the "
          "same network untrained do not.",
          (train_network, embed_and_score, plot), conclude,
          intro="A classifier's last layer is linear: to classify, training must make the classes separable in the "
                "layer before it. Projecting those embeddings to 2-D (`methodo embed RUN_DIR`) shows it, and "
                "measuring the separation makes it a number.")
