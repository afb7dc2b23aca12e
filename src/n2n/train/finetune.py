"""The final fine-tune of a student: ``CE + kd_weight * distillation`` on the whole training split, augmented by the
data set's policy, the best validation weights kept."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from n2n.data import DataBundle
from n2n.train.compute import CPU, Compute, to_host
from n2n.train.evaluate import accuracy
from n2n.train.fit import Diverged, teacher_targets, train_student
from n2n.train.losses import distill_loss

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    """How a student is fine-tuned (the ``--finetune-*`` options, ``--kd-weight``, ``--temperature``)."""

    epochs: int = 5  # 0: no training, the inherited weights as they are
    min_steps: int = 1000  # at least this many steps, so that small data sets get enough training
    lr: float = 3e-3  # the schedule's peak
    schedule: str = "onecycle"  # or "cosine"
    distill: str = "kl"  # or "mse" on logits
    temperature: float = 4.0
    kd_weight: float = 1.0
    augment: str = "none"  # training-batch augmentation (n2n.data.augment); compress passes the data set's
    targets: str = "fixed"  # with augmentation: "fixed" (the originals' logits) or "online" (each augmented batch's)
    batch_size: int = 128
    eval_batch_size: int | None = None
    seed: int = 0

    @property
    def online(self) -> bool:
        """Whether the distillation targets are the teacher's logits of each augmented batch (so the fine-tune needs
        the teacher, not its logits on the training split): ``targets`` 'online' with an augmentation policy."""
        return self.targets == "online" and self.augment != "none"

    def steps(self, n_train: int) -> int:
        """Training steps on a training split of ``n_train`` examples."""
        if not self.epochs:
            return 0
        return max(self.epochs * math.ceil(n_train / self.batch_size), self.min_steps)


class KeepBest:
    """The weights of a model at its best validation accuracy so far, to put back at the end of training.

    ``ties`` decides whether an equal accuracy later in training replaces the earlier weights.
    """

    def __init__(self, ties: bool = False) -> None:
        self.accuracy = -math.inf
        self.state: dict[str, torch.Tensor] | None = None
        self.ties = ties

    def offer(self, model: nn.Module, acc: float) -> bool:
        """Keep ``model``'s weights if ``acc`` is the best so far; returns whether they were kept."""
        if acc > self.accuracy or (self.ties and acc == self.accuracy):
            self.accuracy, self.state = acc, {k: v.clone() for k, v in model.state_dict().items()}
            return True
        return False

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def finetune(
    student: nn.Module,
    data: DataBundle,
    teacher_logits: torch.Tensor | None,
    settings: FinetuneSettings,
    compute: Compute = CPU,
    on_step: Callable[[int], None] | None = None,
    teacher: nn.Module | None = None,
) -> tuple[nn.Module, float]:
    """Train ``student`` in place on ``data.train`` with ``CE + kd_weight * distillation`` towards
    ``teacher_logits`` (the teacher's on ``data.train``), Adam at ``settings.lr`` by ``settings.schedule``.

    Each training batch is augmented by ``settings.augment`` (random crops, flips: `n2n.data.augment`). Its
    distillation target is by default the teacher's logits of the image as it is, computed once, so augmenting costs
    no teacher passes (crops and flips keep the class, and a teacher trained with them predicts the shifted image
    much as the original). With ``settings.online`` it is ``teacher``'s logits of the batch as augmented instead
    (consistent targets, one teacher pass per step; ``teacher_logits`` are then not used and may be None).

    Validation accuracy is measured before training and about ten times along the way; the best weights are kept
    (later ones on ties), and a diverging run keeps the best weights seen before it diverged. The test split is not
    touched. ``on_step(step)`` is called after every step, counting from 1.

    Returns:
        the student on the host in eval mode, and its validation accuracy.
    """
    if settings.online and teacher is None:
        raise ValueError("a fine-tune with online targets needs the teacher")
    if not settings.online and teacher_logits is None:
        raise ValueError("a fine-tune with fixed targets needs the teacher's logits on the training split")
    soft = teacher_targets(compute.copy_of(teacher).eval(), compute) if settings.online else teacher_logits
    val = data.val
    steps = settings.steps(len(data.train))
    best = KeepBest(ties=True)
    best.offer(student, accuracy(student, val.x, val.y, settings.eval_batch_size, compute))
    every = max(1, steps // 10)

    def step_done(step: int) -> None:
        if on_step is not None:
            on_step(step + 1)
        if (step + 1) % every == 0 or step + 1 == steps:
            best.offer(student, accuracy(student, val.x, val.y, settings.eval_batch_size, compute))

    if steps:
        try:
            train_student(
                student,
                data.train.x,
                soft,
                steps=steps,
                batch_size=settings.batch_size,
                lr=settings.lr,
                weight_decay=0.0,
                generator=torch.Generator().manual_seed(settings.seed),
                labels=data.train.y,
                loss_fn=distill_loss(settings.distill, settings.temperature),
                kd_weight=settings.kd_weight,
                on_step=step_done,
                compute=compute,
                schedule=settings.schedule,
                augment=settings.augment,
            )
        except Diverged as err:
            log.warning("the fine-tune diverged (%s); keeping the best weights seen before", err)
    best.restore(student)
    student = to_host(student)  # saved and reported from the host
    return student, best.accuracy
