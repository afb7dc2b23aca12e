"""Parameter and multiply-accumulate counting."""

from __future__ import annotations

import math

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights and biases; buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one convolution or linear layer for one sample.

    Conv: ``prod(out_shape) * (C_in / groups) * prod(kernel)``; linear: ``prod(out_shape) * in_features``.
    """
    per_sample = math.prod(output.shape[1:])
    if isinstance(module, nn.modules.conv._ConvNd):
        return per_sample * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of convolutions and linear layers for one input of ``input_shape`` (no batch dim).

    FLOPs are commonly reported as ``2 * MACs``.
    """
    return forward_counts(model, input_shape)[0]


@torch.no_grad()
def forward_counts(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(macs, activations)`` of one input of ``input_shape`` (no batch dim), from one forward pass: the
    multiply-accumulates of convolutions and linear layers (:func:`count_macs`), and the elements every leaf module
    writes (convolutions, batch norms, activations, pooling...; functional calls between modules are not seen).
    Activations are what memory-bound layers cost: on a CPU they are a large share of a small network's step."""
    macs = activations = 0

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs, activations
        macs += layer_macs(module, output)
        if isinstance(output, torch.Tensor):
            activations += math.prod(output.shape[1:])

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return macs, activations
