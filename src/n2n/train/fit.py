"""The one training loop of n2n: a teacher (cross-entropy by a recipe), a candidate (a few steps of distillation)
and the final fine-tune (cross-entropy plus distillation) are each a :func:`fit` over their own batches, loss,
optimizer and schedule.

The loop owns what every training shares: moving batches with the :class:`~n2n.train.compute.Compute`, the forward
pass under its autocast with the loss in float32, gradient scaling, ReLUs working in place where that is safe, and
(for students) the divergence stop. What differs stays with the caller: the order of examples (:func:`epoch_batches`,
:func:`step_batches`), augmentation, the loss, and what happens between steps (validation, keeping the best
weights, progress).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from n2n.data.augment import augment_batch
from n2n.surgery.transforms import relus_in_place
from n2n.train.compute import CPU, DIVERGE_PATIENCE, Compute, divergence_limit, divergence_streak
from n2n.train.losses import LossFn, mse_distill_loss


class Diverged(Exception):
    """Training produced a NaN/inf loss, or a clearly diverging one (see ``n2n.train.compute.divergence_limit``)."""


def epoch_batches(
    n: int, batch_size: int, epochs: int, generator: torch.Generator, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Indices of ``epochs`` passes over ``n`` examples, each pass in a fresh random order, ``batch_size`` at a time;
    a pass's last, smaller batch is kept unless ``drop_last``. Lazy: the order of a pass is drawn from ``generator``
    when its first batch is asked for, so a caller that also draws from it (augmentation) interleaves exactly."""
    per_epoch = n // batch_size if drop_last else math.ceil(n / batch_size)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(per_epoch):
            yield order[i * batch_size : (i + 1) * batch_size]


def step_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of ``steps`` full mini-batches of ``batch_size`` (all ``n`` when there are fewer), taken in turn from a
    random order of the ``n`` examples that is drawn again whenever the next batch would run past its end."""
    order, pos = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=generator), 0
        yield order[pos : pos + batch_size]
        pos += batch_size


def fit(
    model: nn.Module,
    batches: Iterable[Sequence[torch.Tensor]],
    loss_fn: Callable[..., torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    compute: Compute = CPU,
    guard: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> list[float]:
    """Train ``model`` in place: one optimizer step (then one scheduler step) per batch ``(inputs, *targets)`` of host
    tensors (or tensors already on ``compute``'s device), on ``loss_fn(model(inputs), *targets)``.

    ``model`` is moved to ``compute``'s device and memory format and put in training mode; the forward pass runs
    under its autocast and the loss in float32, with the ReLUs that safely can working in place
    (:func:`relus_in_place`). ``guard`` stops a diverging run: a NaN or infinite loss, or one above
    :func:`divergence_limit` (set on the first batch, against the loss of an all-zero output) for
    ``DIVERGE_PATIENCE`` steps in a row. ``on_step(step)`` is called after each step, counting from 0.

    Returns:
        the loss of every step.

    Raises:
        Diverged: with ``guard``, when the run diverges.
    """
    compute.model(model).train()
    scaler = compute.scaler()
    losses: list[float | torch.Tensor] = []  # tensors without the guard: no host sync per step on a GPU
    limit, streak = math.inf, 0
    with relus_in_place(model):
        for step, batch in enumerate(batches):
            inputs, *targets = (compute.batch(t) for t in batch)
            with compute.autocast():
                out = model(inputs).float()
            loss = loss_fn(out, *targets)
            if guard:
                value = loss.item()
                if not math.isfinite(value):
                    raise Diverged(f"loss became {value} at step {step}")
                if step == 0:
                    with torch.no_grad():
                        limit = divergence_limit(value, loss_fn(torch.zeros_like(out), *targets).item())
                streak = divergence_streak(streak, value, limit)
                if streak >= DIVERGE_PATIENCE:
                    raise Diverged(f"loss {value:.4g} above {limit:.4g} for {streak} steps in a row at step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            losses.append(value if guard else loss.detach())
            if on_step is not None:
                on_step(step)
    return [v if isinstance(v, float) else v.item() for v in losses]


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A student's learning-rate schedule over ``steps``: ``cosine`` decays from the optimizer's rate to zero;
    ``onecycle`` is PyTorch's OneCycleLR peaking at it (warm-up over 30% of the steps, then cosine annealing, Adam's
    beta1 cycled between 0.85 and 0.95), which fine-tunes a student to a better optimum in the same steps."""
    if kind == "onecycle":
        lr = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(1, steps))
    if kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    raise ValueError(f"unknown learning-rate schedule {kind!r} (allowed: 'cosine', 'onecycle')")


def train_student(
    student: nn.Module,
    x: torch.Tensor,
    soft: torch.Tensor | Callable[[torch.Tensor], torch.Tensor],
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
    augment: str = "none",
) -> float:
    """Distil into ``student`` in place with Adam for ``steps`` mini-batches drawn from ``(x, soft)``
    (:func:`step_batches`), the divergence stop on.

    The loss is ``loss_fn(f_s(x), soft)``; when ``labels`` are given it is ``CE(f_s(x), y) + kd_weight * loss_fn``
    (the final fine-tune). The learning rate follows ``schedule`` (:func:`lr_schedule`). Each batch of inputs is
    augmented by the policy ``augment`` (`n2n.data.augment`, drawing from ``generator``; 'none' draws nothing).
    ``soft`` is either the targets of ``x`` (a batch keeps the targets of its inputs as they are, augmented or not)
    or a function from a batch of inputs as augmented to their targets (the teacher's logits computed per batch on
    the compute device: `teacher_targets`).

    Returns:
        the mean loss over the last tenth of the steps.

    Raises:
        Diverged: the loss became NaN or infinite, or stayed above its divergence limit for DIVERGE_PATIENCE steps.
    """
    compute.model(student)  # before the optimizer sees its parameters
    opt = torch.optim.Adam(student.parameters(), lr=lr, weight_decay=weight_decay)
    sched = lr_schedule(opt, schedule, steps)

    def objective(out: torch.Tensor, target: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        loss = loss_fn(out, target)
        return loss if y is None else F.cross_entropy(out, y) + kd_weight * loss

    order = step_batches(x.shape[0], batch_size, steps, generator)

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:  # augmented as each batch is drawn
        for i in order:
            inputs = augment_batch(x[i], augment, generator)
            target = soft(inputs) if callable(soft) else soft[i]
            yield (inputs, target) if labels is None else (inputs, target, labels[i])

    losses = fit(student, batches(), objective, opt, sched, compute=compute, guard=True, on_step=on_step)
    tail = losses[len(losses) - max(1, steps // 10) :]
    return sum(tail) / max(1, len(tail))


def teacher_targets(teacher: nn.Module, compute: Compute = CPU) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``soft`` of :func:`train_student` that distils each batch towards ``teacher``'s logits of the batch as
    augmented (one teacher forward pass per step, on ``compute``'s device, no gradients; the logits stay there, in
    float32, so a GPU fine-tune does not copy them to the host and back). ``teacher`` must be on that device, in eval
    mode."""

    def targets(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), compute.autocast():
            return teacher(compute.batch(inputs)).float()

    return targets
