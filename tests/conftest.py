"""Shared fixtures: tiny IDX data sets written in the real format, a small residual network with functional ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n2n.data import write_idx


def write_tiny_mnist(
    directory: Path, n_train: int = 200, n_test: int = 50, size: int = 28, gz: bool = True, seed: int = 0
) -> Path:
    """Write the four MNIST IDX files with learnable synthetic digits (a bright square whose position is the class)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.uint8) % 10
        x = rng.integers(0, 40, size=(n, size, size), dtype=np.uint8)
        for i, label in enumerate(y):
            r, c = divmod(int(label), 5)
            x[
                i,
                2 + r * (size // 2) : 2 + r * (size // 2) + size // 4,
                1 + c * (size // 5) : 1 + c * (size // 5) + size // 6,
            ] = 250
        return x, y

    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x, y = make(n)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", x)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", y)
    return directory


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return write_tiny_mnist(tmp_path / "mnist")


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.short(x))


class SmallResNet(nn.Module):
    """A custom (non-zoo) model: residual blocks, functional ops, x.view."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.b1 = Block(8, 8, 1)
        self.b2 = Block(8, 16, 2)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = self.b2(self.b1(x))
        return self.fc(x.view(x.size(0), -1))


@pytest.fixture
def small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return SmallResNet().eval()
