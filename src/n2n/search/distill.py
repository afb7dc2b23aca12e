"""Training students: distillation losses, the candidate training loop, the final fine-tune, accuracy."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse_distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Ba & Caruana (2014) logit regression: ``mean_i || f_s(x_i) - z_t(x_i) ||^2`` (squared norm over classes)."""
    return (student_logits - teacher_logits).pow(2).sum(dim=1).mean()


def kl_distill_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """Hinton et al. (2015): ``T^2 * KL(softmax(z_t / T) || softmax(f_s / T))``, averaged over the batch."""
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    q = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p, q, log_target=True, reduction="batchmean") * temperature**2


def distill_loss(kind: str, temperature: float = 4.0) -> LossFn:
    """The distillation loss named ``kind`` ('mse' or 'kl')."""
    if kind == "mse":
        return mse_distill_loss
    if kind == "kl":
        return lambda s, t: kl_distill_loss(s, t, temperature)
    raise ValueError(f"unknown distillation loss {kind!r} (allowed: 'mse', 'kl')")


class Diverged(Exception):
    """Training produced a NaN/inf loss."""


def train_student(
    student: nn.Module,
    x: torch.Tensor,
    soft: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    generator: torch.Generator,
    loss_fn: LossFn = mse_distill_loss,
    labels: torch.Tensor | None = None,
    kd_weight: float = 1.0,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """Train ``student`` in place with Adam for ``steps`` mini-batches drawn from ``(x, soft)``.

    The loss is ``loss_fn(f_s(x), soft)``; when ``labels`` are given it is ``CE(f_s(x), y) + kd_weight * loss_fn``
    (the final fine-tune). The learning rate follows a cosine decay to zero over the steps.

    Returns:
        the mean loss over the last tenth of the steps.

    Raises:
        Diverged: the loss became NaN or infinite.
    """
    student.train()
    opt = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    n = x.shape[0]
    tail: list[float] = []
    order = torch.randperm(n, generator=generator)
    pos = 0
    for step in range(steps):
        if pos + batch_size > n:  # one pass over a reshuffled copy per epoch
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        out = student(x[idx])
        loss = loss_fn(out, soft[idx])
        if labels is not None:
            loss = F.cross_entropy(out, labels[idx]) + kd_weight * loss
        if not torch.isfinite(loss):
            raise Diverged(f"loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - max(1, steps // 10):
            tail.append(loss.item())
        if on_step is not None:
            on_step(step)
    return sum(tail) / max(1, len(tail))


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, computed in batches."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, a fraction in [0, 1]."""
    logits = predict_logits(model, x, batch_size)
    if not torch.isfinite(logits).all():
        return 0.0
    return (logits.argmax(dim=1) == y).float().mean().item()
