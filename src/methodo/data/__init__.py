"""Data stage: load → audit → split → fit transforms on train only → balance → augment → tensors.

Each step is usable alone: ``load_dataset(cfg.data)``, ``split_indices(...)``, ``audit(...)``,
``balance(...)``, ``build_pipeline(...)`` (features), ``AugmentPipeline(...)``, ``prepare(...)``.
Heavy libraries (torch, scikit-learn, imbalanced-learn) are imported by the functions that use them.
"""

from methodo.data.sources import DATASETS, Dataset, load_dataset
from methodo.data.split import SPLITS, split_indices
from methodo.data.preprocess import Preprocessor, PreparedData, prepare, split_dataset

__all__ = [
    "DATASETS", "Dataset", "load_dataset", "SPLITS", "split_indices",
    "Preprocessor", "PreparedData", "prepare", "split_dataset",
]
