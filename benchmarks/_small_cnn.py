"""The hand-designed baseline of issue 22: a small batch-norm CNN sized to a parameter budget, trained from scratch.

The family: three stages of ``[3x3 conv + BN + ReLU] x 2`` with a 2x2 max-pool after each stage, widths
``(a, 2a, 4a)`` (optionally a different last width), global average pooling and one linear layer. Trained with
cross-entropy only (no teacher), Adam under a one-cycle schedule peaking at 3e-3, batch 128; the checkpoint is
chosen on the validation split and the test split gives the reported figure.

With conv biases (the default, as in the issue's figures) widths (16, 32, 64) give 72,890 parameters and (8, 16, 32)
give 18,594 on MNIST. Usage::

    from n2n.data import load_data
    from _small_cnn import SmallCNN, fit_widths, train_from_scratch

    data = load_data("mnist", "/work/shared/data/mnist", seed=0)
    widths = fit_widths(75_000, data.input_shape[0], data.num_classes)
    result = train_from_scratch(SmallCNN(widths, data.input_shape[0], data.num_classes), data, epochs=5, seed=0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from n2n.train.compute import Compute
from n2n.train.evaluate import accuracy
from n2n.train.finetune import KeepBest
from n2n.train.fit import epoch_batches, fit

#: how the baselines compute: float32, channels-last on the CPU (what n2n's fine-tune uses on a CPU)
COMPUTE = Compute("cpu", "fp32", channels_last=True)


class SmallCNN(nn.Module):
    """Three stages of two 3x3 conv-BN-ReLU layers, each stage followed by a 2x2 max-pool; global average pooling;
    one linear classifier. ``widths`` are the three stages' channel counts."""

    def __init__(
        self, widths: tuple[int, int, int], in_channels: int = 1, num_classes: int = 10, bias: bool = True
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c, w, 3, padding=1, bias=bias), nn.BatchNorm2d(w), nn.ReLU()]
                c = w
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def small_cnn_params(
    widths: tuple[int, int, int], in_channels: int = 1, num_classes: int = 10, bias: bool = True
) -> int:
    """Parameters of ``SmallCNN(widths, ...)`` (BN weight and bias counted; running statistics are buffers)."""
    total, c = 0, in_channels
    for w in widths:
        for _ in range(2):
            total += c * w * 9 + (w if bias else 0) + 2 * w
            c = w
    return total + c * num_classes + num_classes


def fit_widths(
    target: int, in_channels: int = 1, num_classes: int = 10, tolerance: float = 0.05, bias: bool = True
) -> tuple[int, int, int]:
    """Widths ``(a, 2a, 4a)`` with integer ``a`` whose parameter count is nearest ``target``; when that is not within
    ``tolerance`` (relative), ``(a, 2a, c)`` with a separately chosen last width ``c`` (the nearest count over ``a``
    near the first choice and every ``c``). Raises ValueError when nothing is within ``tolerance``."""

    def count(w: tuple[int, int, int]) -> int:
        return small_cnn_params(w, in_channels, num_classes, bias)

    best_a = min(range(1, 1025), key=lambda a: abs(count((a, 2 * a, 4 * a)) - target))
    widths = (best_a, 2 * best_a, 4 * best_a)
    if abs(count(widths) - target) <= tolerance * target:
        return widths
    options = [(a, 2 * a, c) for a in range(max(1, best_a - 1), best_a + 2) for c in range(1, 16 * best_a + 16)]
    widths = min(options, key=lambda w: (abs(count(w) - target), abs(w[2] - 4 * w[0])))
    if abs(count(widths) - target) > tolerance * target:
        raise ValueError(f"no SmallCNN widths within {tolerance:.0%} of {target:,} parameters (nearest: {widths})")
    return widths


def recalibrate_bn(
    model: nn.Module,
    x: torch.Tensor,
    batches: int = 50,
    batch_size: int = 256,
    compute: Compute = COMPUTE,
    generator: torch.Generator | None = None,
) -> None:
    """Re-estimate every batch norm's running statistics as the plain average over ``batches`` mini-batches of
    ``x`` (train-mode forward passes, no gradients; EagleEye's adaptive BN). Weights are untouched."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    gen = generator or torch.Generator().manual_seed(0)
    order = torch.randperm(x.shape[0], generator=gen)
    with torch.no_grad():
        for i in range(min(batches, math.ceil(x.shape[0] / batch_size))):
            model(compute.batch(x[order[i * batch_size : (i + 1) * batch_size]]))
    for m, momentum in zip(norms, saved, strict=False):
        m.momentum = momentum
    model.train(was_training)


def train_from_scratch(
    model: nn.Module,
    data: Any,
    *,
    epochs: int = 5,
    seed: int = 0,
    batch_size: int = 128,
    peak_lr: float = 3e-3,
    weight_decay: float = 0.0,
    evals: int = 10,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    compute: Compute = COMPUTE,
    reinitialise: bool = True,
) -> dict[str, Any]:
    """Train ``model`` on ``data`` (an ``n2n.data.DataBundle``) with cross-entropy only, Adam under OneCycleLR
    peaking at ``peak_lr``, ``batch_size`` examples a step, ``epochs`` passes over a reshuffled training split.

    ``seed`` seeds the initialisation (``reinitialise``: every layer's ``reset_parameters`` after
    ``torch.manual_seed(seed)``), the data order and ``augment``. Validation accuracy is measured ``evals`` times,
    evenly spaced (the last at the end); the best weights (ties: the later) are kept and measured on the test split.
    Returns the figures; ``model`` ends with the chosen weights, in eval mode, on the host.
    """
    torch.manual_seed(seed)
    if reinitialise:
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    model = compute.model(model)
    n = data.train.x.shape[0]
    steps = epochs * (n // batch_size)  # full batches only
    opt = torch.optim.Adam(model.parameters(), lr=peak_lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak_lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    every = max(1, steps // evals)
    best, best_step, curve = KeepBest(ties=True), 0, []

    def step_done(step: int) -> None:
        nonlocal best_step
        if (step + 1) % every == 0 or step + 1 == steps:
            acc = accuracy(model, data.val.x, data.val.y, compute=compute)
            curve.append((step + 1, acc))
            if best.offer(model, acc):
                best_step = step + 1

    def augmented(x: torch.Tensor) -> torch.Tensor:
        return x if augment is None else augment(x, gen)

    t0 = time.perf_counter()
    order = epoch_batches(n, batch_size, epochs, gen, drop_last=True)
    batches = ((augmented(data.train.x[i]), data.train.y[i]) for i in order)
    fit(model, batches, F.cross_entropy, opt, sched, compute=compute, on_step=step_done)
    best.restore(model)
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "val_accuracy": best.accuracy,
        "best_step": best_step,
        "test_accuracy": accuracy(model, data.test.x, data.test.y),
        "val_curve": curve,
        "seconds": time.perf_counter() - t0,
    }
