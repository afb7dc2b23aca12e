"""Training a teacher from the zoo with cross-entropy."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import nn

from n2n._seed import seed_everything
from n2n.data import DataBundle
from n2n.models.io import ModelSpec
from n2n.models.zoo import create_model
from n2n.search.compute import CPU, Compute
from n2n.search.distill import accuracy

log = logging.getLogger(__name__)


def teacher_spec(arch: str, data: DataBundle, width: float = 1.0) -> ModelSpec:
    """The spec of zoo architecture ``arch`` sized for ``data``."""
    c, h, w = data.input_shape
    kwargs = {"in_channels": c, "num_classes": data.num_classes, "input_size": [h, w], "width": width}
    return ModelSpec(
        arch={"source": "zoo", "name": arch, "kwargs": kwargs},
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        normalization={"mean": list(data.mean), "std": list(data.std)},
        meta={"data": data.name},
    )


def train_classifier(
    model: nn.Module,
    data: DataBundle,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    compute: Compute = CPU,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy, Adam and a cosine schedule; keeps the best epoch on validation.

    Training runs on ``compute``'s device and precision; the trained model is returned on the host.
    """
    seed_everything(seed)
    compute.model(model)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.train.x, data.train.y
    steps_per_epoch = math.ceil(len(y) / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, total))))
    loss_fn = nn.CrossEntropyLoss()
    scaler = compute.scaler()
    best_acc, best_state, step = -1.0, None, 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            with compute.autocast():
                out = model(compute.batch(x[idx])).float()
            loss = loss_fn(out, compute.batch(y[idx]))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            if on_step is not None:
                on_step(step, total)
        acc = accuracy(model, data.val.x, data.val.y, compute=compute)
        log.info("epoch %d: validation accuracy %.4f", epoch + 1, acc)
        if acc > best_acc:
            best_acc, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.to("cpu", memory_format=torch.contiguous_format).eval()


def train_teacher(
    arch: str,
    data: DataBundle,
    *,
    width: float = 1.0,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    compute: Compute = CPU,
) -> tuple[nn.Module, ModelSpec]:
    """Build zoo architecture ``arch`` for ``data`` and train it; returns the model and its spec (with metrics)."""
    seed_everything(seed)
    spec = teacher_spec(arch, data, width)
    model = create_model(arch, **spec.arch["kwargs"])
    train_classifier(
        model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, on_step=on_step, compute=compute
    )
    spec.meta.update(
        val_accuracy=accuracy(model, data.val.x, data.val.y),
        test_accuracy=accuracy(model, data.test.x, data.test.y),
        epochs=epochs,
        seed=seed,
    )
    return model, spec
