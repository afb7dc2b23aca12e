"""Training and inference: distillation losses, the student training loop, logits and accuracy."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from n2n.surgery.transforms import folded, relus_in_place
from n2n.train.compute import CPU, DIVERGE_PATIENCE, Compute, divergence_limit, divergence_streak

log = logging.getLogger(__name__)

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
    """Training produced a NaN/inf loss, or a clearly diverging one (see ``n2n.train.compute.divergence_limit``)."""


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
    compute: Compute = CPU,
    schedule: str = "cosine",
) -> float:
    """Train ``student`` in place with Adam for ``steps`` mini-batches drawn from ``(x, soft)``.

    The loss is ``loss_fn(f_s(x), soft)``; when ``labels`` are given it is ``CE(f_s(x), y) + kd_weight * loss_fn``
    (the final fine-tune). The learning rate follows ``schedule``: ``cosine`` decays from ``lr`` to zero over the
    steps; ``onecycle`` is PyTorch's OneCycleLR peaking at ``lr`` (warm-up over 30% of the steps, then cosine
    annealing, Adam's beta1 cycled between 0.85 and 0.95), which fine-tunes a student to a better optimum in the
    same steps. ``student`` is moved to
    ``compute``'s device and memory format; the forward pass runs under its autocast, the loss in float32, with
    the ReLUs that safely can working in place (:func:`relus_in_place`).

    Returns:
        the mean loss over the last tenth of the steps.

    Raises:
        Diverged: the loss became NaN or infinite, or stayed above its divergence limit for DIVERGE_PATIENCE steps.
    """
    compute.model(student).train()
    opt = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
    if schedule == "onecycle":
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr, total_steps=max(1, steps)
        )
    elif schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    else:
        raise ValueError(f"unknown learning-rate schedule {schedule!r} (allowed: 'cosine', 'onecycle')")
    scaler = compute.scaler()
    n = x.shape[0]
    tail: list[float] = []
    order = torch.randperm(n, generator=generator)
    pos, limit, streak = 0, math.inf, 0

    def objective(out: torch.Tensor, target: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        loss = loss_fn(out, target)
        return loss if y is None else F.cross_entropy(out, y) + kd_weight * loss

    with relus_in_place(student):
        for step in range(steps):
            if pos + batch_size > n:  # one pass over a reshuffled copy per epoch
                order, pos = torch.randperm(n, generator=generator), 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            target = compute.batch(soft[idx])
            y = None if labels is None else compute.batch(labels[idx])
            with compute.autocast():
                out = student(compute.batch(x[idx])).float()
            loss = objective(out, target, y)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"loss became {value} at step {step}")
            if step == 0:
                with torch.no_grad():
                    limit = divergence_limit(value, objective(torch.zeros_like(out), target, y).item())
            streak = divergence_streak(streak, value, limit)
            if streak >= DIVERGE_PATIENCE:
                raise Diverged(f"loss {value:.4g} above {limit:.4g} for {streak} steps in a row at step {step}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if step >= steps - max(1, steps // 10):
                tail.append(value)
            if on_step is not None:
                on_step(step)
    return sum(tail) / max(1, len(tail))


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: torch.Tensor, batch_size: int | None = None, compute: Compute = CPU, fold_bn: bool = False
) -> torch.Tensor:
    """Float32 logits of ``model`` on host tensor ``x`` in eval mode, computed in batches (default: the device's
    ``compute.eval_batch_size``) on ``compute``'s device; returned on the host. ``model`` is not moved (a copy is,
    when it lives elsewhere). ``fold_bn`` computes them with a :func:`folded` copy when ``model`` can be traced."""
    batch_size = batch_size or compute.eval_batch_size
    twin = folded(model) if fold_bn else None
    model = compute.copy_of(model) if twin is None else compute.model(twin)
    was_training = model.training
    model.eval()
    try:  # the folded copy is ours: its ReLUs may work in place (4.5% faster scoring)
        with compute.autocast(), relus_in_place(twin) if twin is not None else contextlib.nullcontext():
            batches = [model(compute.batch(x[i : i + batch_size])) for i in range(0, x.shape[0], batch_size)]
        return torch.cat(batches).float().cpu()
    finally:
        model.train(was_training)


def accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = None, compute: Compute = CPU
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, a fraction in [0, 1] (batch norms folded, see :func:`folded`)."""
    logits = predict_logits(model, x, batch_size, compute, fold_bn=True)
    if not torch.isfinite(logits).all():
        return 0.0
    return (logits.argmax(dim=1) == y).float().mean().item()
