"""Seeding helpers: one place that fixes every source of randomness n2n uses."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(seed: int) -> torch.Generator:
    """A fresh CPU generator for one purpose (sampling, shuffling) so purposes do not disturb each other."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g
