"""Small hand-written architectures beyond the zoo, for the surgery's property tests and end-to-end runs.

Each builder takes ``in_channels`` and ``num_classes`` and returns a network for 8x8 inputs (the MLP takes
flattened or image inputs alike). They cover the constructs users bring: depthwise convolutions in inverted
residual blocks, squeeze-and-excitation, dense concatenation, bottleneck blocks, GroupNorm/LayerNorm, plain MLPs,
nested containers and functional forward code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 3) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNetV2Like(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2), InvertedResidual(12, 12, 1))
        self.head = nn.Sequential(nn.Conv2d(12, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU6())
        self.classifier = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class SENet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.se1 = SqueezeExcite(16)
        self.conv2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.se2 = SqueezeExcite(16)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se1(F.relu(self.conv1(x)))
        x = self.se2(F.relu(self.conv2(x)))
        return self.fc(x.view(x.size(0), -1))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(F.relu(self.norm(x)))], dim=1)


class DenseNetLike(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, growth: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.block = nn.Sequential(*(DenseLayer(8 + i * growth, growth) for i in range(3)))
        width = 8 + 3 * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 12, 1), nn.AvgPool2d(2))
        self.classifier = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transition(self.block(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class BottleneckResNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = nn.Sequential(Bottleneck(16, 4, 16, 1), Bottleneck(16, 4, 16, 1))
        self.layer2 = nn.Sequential(Bottleneck(16, 8, 32, 2))
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class GroupNormNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),
        )
        self.classifier = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class LayerNormNet(nn.Module):
    """Convolutions, then a LayerNorm-ed MLP head on the flattened features."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(8 * 4 * 4, 64)
        self.norm = nn.LayerNorm(64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.relu(self.norm(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class MLP(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * 64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
            nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class NestedContainers(nn.Module):
    """Sequentials inside a ModuleDict inside a Sequential."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())),
        )
        self.branches = nn.ModuleDict({
            "left": nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
            "right": nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU()),
        })
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        x = self.branches["left"](x) + self.branches["right"](x)
        return self.head(x)


class FunctionalOps(nn.Module):
    """A forward written with functional ops: F.relu, +, torch.cat, x.view, torch.flatten, pooling."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.a = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)
        self.d = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.a(x))
        b = F.relu(self.b(a)) + a
        c = F.relu(self.c(b))
        x = F.relu(self.d(torch.cat([b, c], dim=1)))
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


GALLERY = {
    "mobilenetv2": MobileNetV2Like,
    "senet": SENet,
    "densenet": DenseNetLike,
    "bottleneck": BottleneckResNet,
    "groupnorm": GroupNormNet,
    "layernorm": LayerNormNet,
    "mlp": MLP,
    "nested": NestedContainers,
    "functional": FunctionalOps,
}


def build(name: str, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A gallery model by name (also the import path target ``gallery:build`` for ``n2n compress``)."""
    return GALLERY[name](in_channels=in_channels, num_classes=num_classes)
