"""Small hand-written architectures beyond the zoo, for the surgery's property tests and end-to-end runs.

Each builder takes ``in_channels`` and ``num_classes`` and returns a network for 8x8 inputs (the MLP takes
flattened or image inputs alike). They cover the constructs users bring: depthwise convolutions in inverted
residual blocks, squeeze-and-excitation, dense concatenation, bottleneck blocks, GroupNorm/LayerNorm, plain MLPs,
nested containers and functional forward code; and those torchvision and timm networks hold (norm
subclasses outside torch.nn, training-only branches, in-place ReLUs on shared inputs, a depthwise first layer, grouped
convolutions, class tokens and optional forward inputs).
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
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GroupNorm(8, 32),
            nn.ReLU(),
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
            nn.Flatten(),
            nn.Linear(in_channels * 64, 64),
            nn.ReLU(),
            nn.Linear(64, 64),
            nn.ReLU(),
            nn.Linear(64, 32),
            nn.ReLU(),
            nn.Linear(32, num_classes),
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
        self.branches = nn.ModuleDict(
            {
                "left": nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
                "right": nn.Sequential(nn.Conv2d(16, 16, 1), nn.ReLU()),
            }
        )
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


class NormAct(nn.BatchNorm2d):
    """A batch norm with its activation, defined outside torch.nn and branching on ``self.training`` (timm's
    ``BatchNormAct2d``): traced through, it would become a functional batch norm that surgery cannot resize."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        momentum = self.momentum if self.training else 0.0
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, momentum)
        return self.act(x)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of (N, C, H, W) (torchvision's and timm's ``LayerNorm2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class DropPath(nn.Module):
    """Stochastic depth outside torch.nn: zeroes a random share of samples while training, the identity in eval."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) > 0.5).to(x.dtype)
        return x * keep * 2.0


class CustomNormNet(nn.Module):
    """Custom norm subclasses, stochastic depth, and an auxiliary head used only in training (GoogLeNet's)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1, bias=False)
        self.bn1 = NormAct(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = NormAct(8)
        self.drop_path = DropPath()
        self.conv3 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.ln = ChannelLayerNorm(16)
        self.aux = nn.Linear(8, num_classes)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        x = x + self.drop_path(self.bn2(self.conv2(x)))
        out = self.classifier(self.ln(F.gelu(self.conv3(x))).mean((2, 3)))
        if self.training:
            return out + 0.3 * self.aux(x.mean((2, 3)))
        return out


class BasicConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionLike(nn.Module):
    """Branches reading one input, each ending in an in-place ReLU (GoogLeNet's and Inception's blocks)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)  # no ReLU: the branches' in-place ReLUs are not repeats
        self.branch1 = BasicConv(8, 8, 1)
        self.branch3 = nn.Sequential(BasicConv(8, 4, 1), BasicConv(4, 8, 3))
        self.pool_proj = BasicConv(8, 4, 1)
        self.classifier = nn.Linear(20, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        pooled = F.max_pool2d(x, 3, 1, 1)
        x = torch.cat([self.branch1(x), self.branch3(x), self.pool_proj(pooled)], 1)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class DepthwiseFirst(nn.Module):
    """An inverted-residual network whose first layer is depthwise (MobileNetV2 with its stem removed)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.dw = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.bn = nn.BatchNorm2d(in_channels)
        self.blocks = nn.Sequential(InvertedResidual(in_channels, 8, 2), InvertedResidual(8, 8, 1))
        self.classifier = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.dw(x))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class GroupedConvNet(nn.Module):
    """ResNeXt-style blocks: a 1x1 reduction, a grouped 3x3 convolution, a 1x1 expansion and a residual."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.reduce = nn.Conv2d(16, 8, 1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
        self.expand = nn.Conv2d(8, 16, 1)
        self.classifier = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.relu(x + self.expand(F.relu(self.grouped(F.relu(self.reduce(x))))))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TokenNet(nn.Module):
    """A ViT in miniature: patch embedding, class token, position embedding, two-head attention (its reshape into heads
    fixes the width of ``qkv``), an MLP, and an optional mask input (timm's ``attn_mask=None``)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(in_channels, 16, 4, stride=4)  # 8x8 -> 2x2 patches of 16 channels
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
        self.pos = nn.Parameter(torch.randn(1, 5, 16) * 0.02)
        self.qkv = nn.Linear(16, 48)
        self.proj = nn.Linear(16, 16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos
        if mask is not None:
            x = x * mask
        q, k, v = self.qkv(x).reshape(x.shape[0], 5, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, 2, 5, 8)
        attn = ((q @ k.transpose(-2, -1)) * 8**-0.5).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(x.shape[0], 5, 16))
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x[:, 0])


class ShuffleBlockNet(nn.Module):
    """ShuffleNet v2 in miniature: the channels split in two, one half through conv-BN-ReLU, concatenated with the
    other half and shuffled; the in-place ReLU writes into one of the split's views once its conv is removed."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.last = nn.Sequential(nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        halves = x.chunk(2, dim=1)
        x = torch.cat([halves[0], self.branch(halves[1])], 1)
        n, c, h, w = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)  # channel shuffle
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.last(x), 1), 1))


class GhostBlockNet(nn.Module):
    """GhostNet in miniature: a ghost module (a conv, a cheap depthwise conv of its output, both concatenated and
    sliced to the block's width) added to the stem's output. Torch-Pruning maps k channels cut from the stem onto k to
    2k channels of the ghost module, depending on which k: the stem is not shrinkable (its student's shape would
    depend on its weights); the convolutions after the block are."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.primary = nn.Sequential(nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.cheap = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.inner = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.last = nn.Sequential(nn.Conv2d(24, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.classifier = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x1 = self.primary(x)
        ghost = torch.cat([x1, self.cheap(x1)], 1)
        x = x + ghost[:, :16]
        x = self.last(self.inner(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


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
    "customnorm": CustomNormNet,
    "inception": InceptionLike,
    "depthwisefirst": DepthwiseFirst,
    "grouped": GroupedConvNet,
    "tokens": TokenNet,
    "shuffle": ShuffleBlockNet,
    "ghost": GhostBlockNet,
}


def build(name: str, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A gallery model by name (also the import path target ``gallery:build`` for ``n2n compress``)."""
    return GALLERY[name](in_channels=in_channels, num_classes=num_classes)
