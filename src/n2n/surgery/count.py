"""Parameter and multiply-accumulate counting."""

from __future__ import annotations

import math
from collections.abc import Callable

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

    _forward_with_leaf_hook(model, input_shape, hook)
    return macs, activations


def count_calls(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Leaf-module calls in one forward pass of one input of ``input_shape`` (no batch dim) that compute something:
    a module called twice counts twice, one that hands back its input untouched (an identity, the stand-in of a
    removed layer, dropout in eval mode) does not, and functional calls between modules are not seen. Most of a
    small network's eager latency is a fixed cost per call."""
    calls = 0

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal calls
        passes_through = bool(inputs) and output is inputs[0] and not getattr(module, "inplace", False)
        calls += not passes_through

    _forward_with_leaf_hook(model, input_shape, hook)
    return calls


@torch.no_grad()
def _forward_with_leaf_hook(model: nn.Module, input_shape: tuple[int, ...], hook: Callable[..., None]) -> None:
    """One eval-mode forward pass of a zero input with ``hook`` on every leaf module (the mode and hooks restored)."""
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
