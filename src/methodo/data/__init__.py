"""Data stage: load → split → fit transforms on train only → in-memory tensors.

Each step is usable alone: ``load_dataset(cfg.data)``, ``split_indices(...)``,
``Preprocessor.fit(...)``.
"""

from methodo.data.sources import DATASETS, Dataset, load_dataset
from methodo.data.split import SPLITS, split_indices
from methodo.data.preprocess import Preprocessor, PreparedData, prepare

__all__ = [
    "DATASETS", "Dataset", "load_dataset", "SPLITS", "split_indices",
    "Preprocessor", "PreparedData", "prepare",
]
