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


MAX_PARAMS = 2 * 10**9  # 8 GB of fp32 weights: far above any network a search trains, below what kills a machine
_ZOO_KWARGS = ("in_channels", "num_classes", "input_size", "width")


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build architecture ``name`` for inputs (in_channels, H, W) and ``num_classes`` outputs, widths x ``width``.

    Keyword arguments (all optional): ``in_channels`` (3), ``num_classes`` (10), ``input_size`` (32, or [H, W]),
    ``width`` (1.0). They usually come from a file or the command line, so each is checked, and the network is first
    built on PyTorch's meta device (no memory) to refuse one with more than 2 billion parameters.

    Raises:
        ModelError: unknown name or keyword, a value of the wrong type or range, or a network too large to build.
    """
    if name not in _REGISTRY:
        raise ModelError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    unknown = sorted(set(kwargs) - set(_ZOO_KWARGS))
    if unknown:
        raise ModelError(f"zoo model {name!r} takes no argument {unknown[0]!r}; it takes {', '.join(_ZOO_KWARGS)}")
    in_channels, num_classes = kwargs.get("in_channels", 3), kwargs.get("num_classes", 10)
    input_size, width = kwargs.get("input_size", 32), kwargs.get("width", 1.0)
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10**6:
            raise ModelError(f"{key} of zoo model {name!r} must be an integer in [1, 1000000]; got {value!r}")
    if num_classes < 2:
        raise ModelError(f"num_classes of zoo model {name!r} must be >= 2; got {num_classes}")
    size = [input_size] * 2 if isinstance(input_size, int) and not isinstance(input_size, bool) else input_size
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096 for v in size)
    ):
        raise ModelError(
            f"input_size of zoo model {name!r} must be an integer or [H, W] in [1, 4096]; got {input_size!r}"
        )
    if not isinstance(width, int | float) or isinstance(width, bool) or not 0 < width <= 64:
        raise ModelError(f"width of zoo model {name!r} must be a number in (0, 64]; got {width!r}")
    args = {"in_channels": in_channels, "num_classes": num_classes, "input_size": tuple(size), "width": float(width)}
    with torch.device("meta"):
        params = sum(p.numel() for p in _REGISTRY[name](**args).parameters())
    if params > MAX_PARAMS:
        raise ModelError(f"zoo model {name!r} with {kwargs} would have {params:,} parameters (limit {MAX_PARAMS:,})")
    return _REGISTRY[name](**args)


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
