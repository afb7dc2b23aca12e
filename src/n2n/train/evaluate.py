"""Inference: a model's logits on a tensor of examples, and its top-1 accuracy."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from n2n.surgery.transforms import folded, relus_in_place
from n2n.train.compute import CPU, Compute


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
    try:  # the folded copy is ours: its ReLUs may work in place (one write fewer per activation)
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
