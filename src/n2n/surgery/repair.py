"""Shape repair: after an edit, adapt every layer whose input no longer fits it.

The edit (a removed layer) changes what flows downstream; this pass runs the network node by node on a sample input
and, wherever a module's expected input size differs from what now arrives, replaces it by a module of the right size
that inherits the overlapping part of the old weights. Element-wise merges whose operands disagree in channels
(a residual addition whose branch lost a channel-changing layer) get the narrower side zero-padded, as in the
parameter-free "option A" shortcut of He et al. (2016). Dispatch is on module types, never on class names.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from n2n.errors import SurgeryError
from n2n.surgery._fx import ELEMENTWISE_BINARY, forget_dead, last_uses, load_args, placeholder_value, run_node


class Bypass(nn.Module):
    """Stand-in for a removed layer: passes its input on, resampled to the removed layer's output size if needed.

    Channels are left as they are; the layers downstream adapt to them (see :func:`repair`).
    """

    def __init__(self, out_size: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.out_size = tuple(out_size) if out_size is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.out_size is None:
            return x
        # (N, C, *spatial) -> (N, C, *out_size): average pooling keeps the signal's scale.
        pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(self.out_size)]
        return pool(x, self.out_size)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}"


class ChannelPad(nn.Module):
    """A parameter-free shortcut for a channel mismatch: output channel ``j`` is input channel ``index[j]``, or zeros
    where ``index[j]`` is ``in_channels``. As built, the input channels come first and zeros fill the rest
    (zero-padding; a narrower output truncates).

    The map is a buffer, so the two sides can be shrunk apart: cutting input channels zeroes the outputs they fed,
    cutting output channels drops their entries (:class:`ChannelPadPruner`, which Torch-Pruning is given). Without
    that, Torch-Pruning would tie the channels on both sides of the pad, which no longer line up, and the layers on
    either side could not be shrunk at all.
    """

    def __init__(self, channels: int, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        index = torch.arange(channels)
        self.register_buffer("index", index.masked_fill(index >= in_channels, in_channels))

    @property
    def channels(self) -> int:
        return self.index.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero = x.new_zeros((x.shape[0], 1, *x.shape[2:]))
        return torch.cat([x, zero], 1).index_select(1, self.index)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        # students saved before the map was a buffer padded their first channels: the map as built
        state_dict.setdefault(prefix + "index", self.index.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, channels={self.channels}"


def _copy_overlap(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy the overlapping corner of ``src`` into ``dst`` (same number of dimensions)."""
    region = tuple(slice(0, min(a, b)) for a, b in zip(dst.shape, src.shape, strict=False))
    dst[region] = src[region]


def _adapt_conv(m: nn.modules.conv._ConvNd, x: torch.Tensor) -> nn.Module | None:
    c = x.shape[1]
    if c == m.in_channels:
        return None
    depthwise = m.groups == m.in_channels and m.groups > 1
    if depthwise:
        multiplier = m.out_channels // m.in_channels
        groups, out = c, c * multiplier
    elif m.groups == 1:
        groups, out = 1, m.out_channels
    else:
        if c % m.groups:
            raise SurgeryError("", f"grouped convolution (groups={m.groups}) cannot take {c} input channels")
        groups, out = m.groups, m.out_channels
    new = type(m)(c, out, m.kernel_size, m.stride, m.padding, m.dilation, groups, m.bias is not None, m.padding_mode)
    with torch.no_grad():
        if not depthwise:  # new input channels start silent; a depthwise filter keeps its fresh init
            new.weight.zero_()
        _copy_overlap(new.weight, m.weight)
        if m.bias is not None:
            new.bias.zero_()
            _copy_overlap(new.bias, m.bias)
    return new


def _adapt_linear(m: nn.Linear, x: torch.Tensor) -> nn.Module | None:
    f = x.shape[-1]
    if f == m.in_features:
        return None
    new = nn.Linear(f, m.out_features, bias=m.bias is not None)
    with torch.no_grad():
        new.weight.zero_()
        _copy_overlap(new.weight, m.weight)
        if m.bias is not None:
            new.bias.copy_(m.bias)
    return new


def _resized(m: nn.Module, size: int, tensors: tuple[str, ...]) -> nn.Module:
    """A copy of ``m`` (same class, same settings: a timm ``BatchNormAct2d`` keeps its activation) whose 1-D
    ``tensors`` hold ``size`` values, the overlap inherited. New entries of a running variance start at 1."""
    new = copy.deepcopy(m)
    with torch.no_grad():
        for name in tensors:
            old = getattr(m, name, None)
            if old is None:
                continue
            fresh = torch.ones(size, dtype=old.dtype) if name in ("weight", "running_var") else old.new_zeros(size)
            _copy_overlap(fresh, old)
            if isinstance(old, nn.Parameter):
                setattr(new, name, nn.Parameter(fresh, requires_grad=old.requires_grad))
            else:
                new.register_buffer(name, fresh)
    return new


def _adapt_batchnorm(m: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> nn.Module | None:
    c = x.shape[1]
    if c == m.num_features:
        return None
    new = _resized(m, c, ("weight", "bias", "running_mean", "running_var"))
    new.num_features = c
    return new


def _adapt_groupnorm(m: nn.GroupNorm, x: torch.Tensor) -> nn.Module | None:
    c = x.shape[1]
    if c == m.num_channels:
        return None
    new = _resized(m, c, ("weight", "bias"))
    new.num_channels, new.num_groups = c, math.gcd(m.num_groups, c)
    return new


def _adapt_layernorm(m: nn.LayerNorm, x: torch.Tensor) -> nn.Module | None:
    """nn.LayerNorm normalises the trailing dimensions. A subclass may normalise another one (torchvision's and
    timm's ``LayerNorm2d`` take (N, C, H, W) and normalise C): it is resized to the dimension that makes it run."""
    if type(m) is nn.LayerNorm or len(m.normalized_shape) != 1:
        shape = tuple(x.shape[x.dim() - len(m.normalized_shape) :])
        if shape == tuple(m.normalized_shape):
            return None
        new = nn.LayerNorm(shape, m.eps, m.elementwise_affine, bias=m.bias is not None)
        with torch.no_grad():
            for name in ("weight", "bias"):
                if getattr(m, name) is not None and getattr(new, name) is not None:
                    _copy_overlap(getattr(new, name), getattr(m, name))
        return new
    for size in dict.fromkeys((x.shape[-1], x.shape[1])):
        new = m if size == m.normalized_shape[0] else _resized(m, size, ("weight", "bias"))
        new.normalized_shape = (size,)
        try:
            new(x)
        except RuntimeError:
            continue
        return None if new is m else new
    raise SurgeryError("", f"{type(m).__name__} of {m.normalized_shape[0]} channels cannot take {tuple(x.shape)}")


#: Type -> adapter. An adapter returns None when the module already fits its input.
ADAPTERS: dict[type, Callable[[Any, torch.Tensor], nn.Module | None]] = {
    nn.modules.conv._ConvNd: _adapt_conv,
    nn.Linear: _adapt_linear,
    nn.modules.batchnorm._BatchNorm: _adapt_batchnorm,
    nn.GroupNorm: _adapt_groupnorm,
    nn.LayerNorm: _adapt_layernorm,
}


def _adapter_for(module: nn.Module) -> Callable[[Any, torch.Tensor], nn.Module | None] | None:
    for kind, fn in ADAPTERS.items():
        if isinstance(module, kind):
            return fn
    return None


def set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent_name, _, leaf = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, leaf, module)


def _pad_operand(gm: fx.GraphModule, node: fx.Node, index: int, channels: int, have: int) -> fx.Node:
    """Insert a ChannelPad from ``have`` to ``channels`` before operand ``index`` of ``node``; returns the new node."""
    name = f"n2n_pad_{node.name}_{index}"
    gm.add_submodule(name, ChannelPad(channels, have))
    with gm.graph.inserting_before(node):
        padded = gm.graph.call_module(name, (node.args[index],))
    args = list(node.args)
    args[index] = padded
    node.args = tuple(args)
    return padded


@torch.no_grad()
def repair(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, Any]:
    """Adapt ``gm`` in place so that it runs on ``x``; returns the output node's value on ``x`` (every other value is
    dropped once no node needs it).

    Raises:
        SurgeryError: naming the node where the network cannot be made to fit.
    """
    gm.eval()
    env: dict[fx.Node, Any] = {}
    nodes = list(gm.graph.nodes)
    last = last_uses(nodes)
    keep = {n for n in nodes if n.op == "output"}
    for i, node in enumerate(nodes):
        if node.op == "placeholder":
            env[node] = placeholder_value(node, x)
            continue
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            adapter = _adapter_for(module)
            args = load_args(node.args, env)
            if adapter is not None and args and isinstance(args[0], torch.Tensor):
                try:
                    new = adapter(module, args[0])
                except SurgeryError as err:
                    raise SurgeryError(str(node.target), err.reason) from None
                if new is not None:
                    set_module(gm, str(node.target), new)
        elif node.op == "call_function" and node.target in ELEMENTWISE_BINARY:
            _match_channels(gm, node, env)
        try:
            env[node] = run_node(gm, node, env)
        except (RuntimeError, ValueError, IndexError) as err:
            where = str(node.target) if node.op == "call_module" else node.name
            raise SurgeryError(where, f"shapes no longer fit: {str(err).splitlines()[0]}") from None
        forget_dead(env, node, i, last, keep)
    return env


def _match_channels(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]) -> None:
    """Zero-pad the narrower operand of an element-wise merge when the two disagree only in dimension 1."""
    a, b = (load_args(arg, env) for arg in node.args[:2])
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.dim() != b.dim() or a.dim() < 2:
        return
    if a.shape[1] == b.shape[1] or a.shape[2:] != b.shape[2:] or 1 in (a.shape[1], b.shape[1]):
        return
    wide = max(a.shape[1], b.shape[1])
    index = 0 if a.shape[1] < wide else 1
    padded = _pad_operand(gm, node, index, wide, min(a.shape[1], b.shape[1]))
    env[padded] = run_node(gm, padded, env)
