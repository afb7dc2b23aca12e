"""Distillation losses: logit regression (Ba & Caruana) and softened KL divergence (Hinton et al.)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

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
