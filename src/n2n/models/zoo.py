"""Teacher architectures by name: LeNet-5, VGG-11/13/16/19 (batch norm), CIFAR-style ResNet-18/34.

Every builder adapts to the data's channels, classes and input size (8x8 digits, 28x28 MNIST, 32x32 CIFAR) and is
torch.fx-traceable. At width 1, 3 channels, 32x32 and 10 classes, resnet18/34 have 11,173,962 / 21,282,122
parameters, as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from n2n.errors import ModelError

Builder = Callable[..., nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Register ``fn(in_channels, num_classes, input_size, width) -> nn.Module`` under ``name``."""

    def wrap(fn: Builder) -> Builder:
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    input_size: int | tuple[int, int] | list[int] = 32,
    width: float = 1.0,
) -> nn.Module:
    """Build architecture ``name`` for inputs (in_channels, H, W) and ``num_classes`` outputs, widths x ``width``."""
    if name not in _REGISTRY:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if width <= 0:
        raise ModelError(f"width must be > 0; got {width}")
    if in_channels < 1 or num_classes < 2 or min(size) < 1:
        raise ModelError(
            f"need in_channels >= 1, num_classes >= 2, input size >= 1; got {in_channels}, {num_classes}, {size}"
        )
    return _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, input_size=size, width=width)


def _w(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class LeNet5(nn.Module):
    """LeNet-5: two 5x5 convolutions with max-pooling, then 120-84-classes fully connected layers."""

    def __init__(self, in_channels: int, num_classes: int, input_size: tuple[int, int], width: float) -> None:
        super().__init__()
        c1, c2 = _w(6, width), _w(16, width)
        h, w = input_size
        small = min(h, w) < 16  # keep the second convolution's size on small inputs
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU()]
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        pad = 2 if small else 0
        layers += [nn.Conv2d(c1, c2, 5, padding=pad), nn.ReLU()]
        h, w = h + 2 * pad - 4, w + 2 * pad - 4
        if min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(c2 * h * w, _w(120, width)),
            nn.ReLU(),
            nn.Linear(_w(120, width), _w(84, width)),
            nn.ReLU(),
            nn.Linear(_w(84, width), num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR-style VGG with batch norm: 3x3 conv-BN-ReLU stacks, 2x2 max-pools (skipped once the map is 1x1),
    global average pooling and one linear classifier (the paper's 9.4M-parameter MNIST VGG-13)."""

    def __init__(
        self, cfg: list[int | str], in_channels: int, num_classes: int, input_size: tuple[int, int], width: float
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c, size = in_channels, min(input_size)
        for v in cfg:
            if v == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            out = _w(int(v), width)
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stem, no max-pool, four stages of 64-512 channels with strides 1, 2, 2, 2."""

    def __init__(self, blocks: list[int], in_channels: int, num_classes: int, width: float) -> None:
        super().__init__()
        c = _w(64, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        stages = []
        for i, (n, base) in enumerate(zip(blocks, (64, 128, 256, 512), strict=False)):
            out = _w(base, width)
            layers = []
            for j in range(n):
                layers.append(BasicBlock(c, out, 2 if (i > 0 and j == 0) else 1))
                c = out
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("lenet5")
def lenet5(in_channels: int, num_classes: int, input_size: tuple[int, int], width: float) -> nn.Module:
    return LeNet5(in_channels, num_classes, input_size, width)


def _vgg(name: str) -> Builder:
    def build(in_channels: int, num_classes: int, input_size: tuple[int, int], width: float) -> nn.Module:
        return VGG(VGG_CONFIGS[name], in_channels, num_classes, input_size, width)

    return build


for _name in VGG_CONFIGS:
    register_model(_name)(_vgg(_name))


@register_model("resnet18")
def resnet18(in_channels: int, num_classes: int, input_size: tuple[int, int], width: float) -> nn.Module:
    return ResNet([2, 2, 2, 2], in_channels, num_classes, width)


@register_model("resnet34")
def resnet34(in_channels: int, num_classes: int, input_size: tuple[int, int], width: float) -> nn.Module:
    return ResNet([3, 4, 6, 3], in_channels, num_classes, width)
