"""All randomness goes through here: one seed, recorded, makes a run repeatable on one machine."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) and ask torch for deterministic kernels."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def generator(seed: int, offset: int = 0):
    """A torch CPU generator for one purpose (e.g. shuffling), independent of the global one."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + offset)
    return g
