"""Stage-1 surgery: remove layers from a network and leave a working one."""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn

from n2n.errors import SurgeryError
from n2n.surgery._fx import NORM_TYPES, is_layer, module_of, propagate, residual_merges, trace
from n2n.surgery.repair import Bypass, ChannelPad, repair, set_module

_ADDITIONS = {operator.add, operator.iadd, torch.add}
#: modules whose output is non-negative wherever their input is: pooling, pass-through, the stand-ins of removed layers
_KEEP_NON_NEGATIVE = (
    nn.Identity, Bypass, ChannelPad, nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
)  # fmt: skip


def call_sites(gm: fx.GraphModule) -> dict[str, list[fx.Node]]:
    """Module name -> the ``call_module`` nodes that call it."""
    sites: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            sites.setdefault(str(node.target), []).append(node)
    return sites


def attached_norm(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The normalisation node that is the only consumer of ``node`` (a conv's BatchNorm), if any."""
    users = list(node.users)
    if len(users) != 1 or users[0].op != "call_module":
        return None
    norm = users[0]
    return norm if isinstance(gm.get_submodule(norm.target), NORM_TYPES) else None


def _drop_emptied_branches(gm: fx.GraphModule, removed: set[str]) -> None:
    """A residual addition whose main branch lost all of its layers falls back to its shortcut.

    The main branch is the one that had more layers; a removed shortcut projection instead becomes a parameter-free
    shortcut (its Bypass, zero-padded by :func:`repair` where channels differ), so the block keeps its skip.
    """
    for node, branch_a, branch_b in residual_merges(gm):
        if node.target not in _ADDITIONS:
            continue
        count = {}
        for key, branch in (("a", branch_a), ("b", branch_b)):
            targets = [str(n.target) for n in branch if n.op == "call_module"]
            kept = sum(is_layer(gm.get_submodule(t)) for t in targets)
            count[key] = (kept, kept + sum(t in removed for t in targets))
        for key, other, other_key in (("a", node.args[1], "b"), ("b", node.args[0], "a")):
            kept, before = count[key]
            if before and not kept and before > count[other_key][0]:
                node.replace_all_uses_with(other)
                break


def _is_relu(gm: fx.GraphModule, node: fx.Node) -> bool:
    return (
        isinstance(module_of(gm, node), nn.ReLU)
        or (node.op == "call_function" and node.target in (F.relu, torch.relu))
        or (node.op == "call_method" and node.target == "relu")
    )


def _drop_repeated_relus(gm: fx.GraphModule) -> None:
    """Drop each ReLU whose input comes from another ReLU through pooling or stand-ins only: it computes the identity.

    Removing a convolution and its batch norm from a conv-BN-ReLU stack leaves two ReLUs in a row (with a max-pool
    between them, perhaps). The second one changes no output and no gradient (it passes the gradient exactly where
    the first one does), but it costs a pass over the activation forward and backward: a fifth of the training step
    of a VGG-13 student with seven layers removed. Its node goes; its module goes too unless it is called elsewhere.
    """
    for node in list(gm.graph.nodes):
        if not _is_relu(gm, node) or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        source = node.args[0]
        while isinstance(module_of(gm, source), _KEEP_NON_NEGATIVE) and isinstance(source.args[0], fx.Node):
            source = source.args[0]
        if _is_relu(gm, source):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)


#: modules and methods that return their input itself or a view of it: an in-place op after them writes into it
_ALIASING_MODULES = (nn.Identity, Bypass, nn.Flatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_INPLACE_METHODS = {"relu_": "relu", "sigmoid_": "sigmoid", "tanh_": "tanh", "clamp_": "clamp", "hardtanh_": "hardtanh"}
_ALIASING_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "squeeze", "unsqueeze"}
#: calls that return several views of their input (ShuffleNet's channel split): autograd refuses in-place ops on any
_MULTI_VIEW = {"chunk", "split", "tensor_split", "unbind", "split_with_sizes"}


def _multi_view(node: fx.Node) -> bool:
    """Whether ``node`` picks one output of a call returning several views (``x.chunk(2, 1)[1]``)."""
    if node.op != "call_function" or node.target is not operator.getitem or not isinstance(node.args[0], fx.Node):
        return False
    source = node.args[0]
    name = source.target if source.op == "call_method" else getattr(source.target, "__name__", "")
    return source.op in ("call_method", "call_function") and name in _MULTI_VIEW


def _aliases_shared(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True when ``node``'s value is (a view of) the network's input, of a tensor another node also reads, or one of
    several views a split returned."""
    while True:
        if node.op == "placeholder" or len(node.users) > 1 or _multi_view(node):
            return True
        aliasing = isinstance(module_of(gm, node), _ALIASING_MODULES) or (
            node.op == "call_method" and node.target in _ALIASING_METHODS
        )
        if not aliasing or not node.args or not isinstance(node.args[0], fx.Node):
            return False
        node = node.args[0]


def _detach_inplace_ops(gm: fx.GraphModule) -> None:
    """Make in-place activations out-of-place where their input is shared.

    A block such as GoogLeNet's ``relu(bn(conv(x)), inplace=True)`` whose conv and bn are removed applies the in-place
    ReLU to ``x`` itself, which the block's other branches also read: the forward pass changes their input and the
    backward pass fails ("a variable needed for gradient computation has been modified by an inplace operation").
    """
    for node in gm.graph.nodes:
        if not node.args or not isinstance(node.args[0], fx.Node) or not _aliases_shared(gm, node.args[0]):
            continue
        module = module_of(gm, node)
        if getattr(module, "inplace", False) is True:
            set_module(gm, str(node.target), copy.copy(module))
            gm.get_submodule(str(node.target)).inplace = False
        elif node.op == "call_function" and node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}
        elif node.op == "call_method" and node.target in _INPLACE_METHODS:
            node.target = _INPLACE_METHODS[node.target]


def _drop_stand_ins(gm: fx.GraphModule, stand_ins: set[str]) -> None:
    """Take the stand-ins that compute nothing out of the graph: their users read their input directly.

    A removed layer that kept its input's size, and the normalisation that only it fed, would otherwise stay as
    modules that return their input: one Python call each per forward pass, 4-8% of a 75K-parameter MNIST student's
    batch-1 latency in eager PyTorch with four or five layers removed. Resampling stand-ins stay (they compute). The
    state dict is unchanged: the stand-ins hold no tensors.
    """
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in stand_ins:
            continue
        module = gm.get_submodule(str(node.target))
        if isinstance(module, nn.Identity) or (isinstance(module, Bypass) and module.out_size is None):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()


def remove_layers(model: nn.Module, names: Iterable[str], example: torch.Tensor) -> fx.GraphModule:
    """Return a copy of ``model`` without the layers ``names``; ``model`` itself is not modified.

    Each removed layer (and the normalisation that only it feeds) leaves the graph: what it read flows on to its
    users, or, when the layer changed the spatial size (a strided convolution), through a :class:`Bypass` that
    resamples it to that size. Layers downstream that
    now receive a different number of channels are adapted, keeping the overlapping part of their weights. A residual
    branch left with no layer falls back to its shortcut. A ReLU left right after another one (through pooling or
    stand-ins only) is dropped: it computes the identity.

    Args:
        model: the network (any torch.fx-traceable module).
        names: qualified module names of convolution / linear layers to remove.
        example: an input batch of the shape the network takes, e.g. ``(2, C, H, W)``.

    Raises:
        SurgeryError: a name is not a removable layer, or the network cannot be made to fit without it.
    """
    gm = trace(model)
    names = set(names)
    if not names:
        return gm
    sites = call_sites(gm)
    named = [node for name in names for node in sites.get(name, [])]
    env = propagate(gm, example, keep={*named, *(a for n in named for a in n.args[:1] if isinstance(a, fx.Node))})
    output = next(n for n in gm.graph.nodes if n.op == "output")
    expected = tuple(env[output].shape)
    stand_ins: set[str] = set()
    for name in sorted(names):
        nodes = sites.get(name, [])
        if not nodes or not is_layer(gm.get_submodule(name)):
            raise SurgeryError(name, "is not a convolution or linear layer of this network")
        if len(nodes) > 1:
            raise SurgeryError(name, f"is called {len(nodes)} times in forward(); shared layers cannot be removed")
        node = nodes[0]
        x_in, x_out = env[node.args[0]], env[node]
        # a strided convolution's spatial size is kept by resampling; a linear layer on tokens (N, T, F) changes F,
        # which the layers after it adapt to like channels
        layer = gm.get_submodule(name)
        resample = isinstance(layer, nn.modules.conv._ConvNd) and x_out.shape[2:] != x_in.shape[2:]
        norm = attached_norm(gm, node)
        set_module(gm, name, Bypass(tuple(x_out.shape[2:]) if resample else None))
        stand_ins.add(name)
        if norm is not None:
            set_module(gm, str(norm.target), nn.Identity())
            stand_ins.add(str(norm.target))
    del env  # the repair below runs the network again: do not hold two sets of its activations
    _drop_emptied_branches(gm, names)
    _drop_repeated_relus(gm)
    _detach_inplace_ops(gm)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    out = repair(gm, example)[output]
    _drop_stand_ins(gm, stand_ins)
    gm.recompile()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SurgeryError("", f"the network's output changed from {expected} to {got}")
    return gm
