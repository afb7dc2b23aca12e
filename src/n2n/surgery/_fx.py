"""torch.fx plumbing shared by the surgery modules: tracing, value propagation, graph queries."""

from __future__ import annotations

import copy
import gc
import inspect
import operator
from collections.abc import Collection
from typing import Any

import torch
from torch import fx, nn

from n2n.errors import ModelError

#: Modules that carry the weights the policies decide about. Everything else (norms, activations, pooling) follows.
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm2d,
)
#: Functions that combine two tensors element-wise (residual additions, gating).
ELEMENTWISE_BINARY = {operator.add, operator.iadd, operator.mul, operator.sub, torch.add, torch.mul, torch.sub}


#: Modules traced as one node even when their class lives outside torch.nn (timm's ``BatchNormAct2d``, torchvision's
#: ``LayerNorm2d``): traced through, they become functional calls on loose tensors, which neither the shape repair
#: nor Torch-Pruning can resize ("running_mean should contain 8 elements not 32").
LEAF_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with subclasses of the layer and norm types kept as modules of their own class."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module) -> fx.GraphModule:
    """Trace a *copy* of ``model`` with torch.fx; the caller's module is never touched.

    The copy is traced in eval mode: fx freezes Python branches on ``self.training`` into the graph, and the
    inference branch is the one a saved student must reproduce (stochastic depth off, no auxiliary heads). Modules
    keep their own ``training`` switch (dropout, batch norm), so the traced network still trains as usual.

    Raises:
        ModelError: naming the construct fx could not trace and the usual workarounds.
    """
    model = copy.deepcopy(model)
    if isinstance(model, fx.GraphModule):
        return model
    was_training = model.training
    model.eval()
    try:
        tracer = _Tracer()
        graph = tracer.trace(model, concrete_args=_optional_inputs(model))
        name = model.__class__.__name__
        return fx.GraphModule(tracer.root, graph, name).train(was_training)
    except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ... depending on the construct
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {first_line}. Workarounds: remove data-dependent "
            "Python control flow from forward(), or make the offending submodule a leaf "
            "(torch.fx.Tracer.is_leaf_module) and hold it with --fix"
        ) from err


def _optional_inputs(model: nn.Module) -> dict[str, Any]:
    """forward()'s inputs after the first that have a default (timm ViT's ``attn_mask=None``): the network is called
    with the image alone, so they are fixed to their defaults. Traced as inputs, they would take the image."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    required = [p.name for p in named if p.default is p.empty]
    if required:
        raise ModelError(
            f"{type(model).__name__}.forward() needs inputs besides the image ({', '.join(required)}): n2n calls "
            "the network with one input tensor"
        )
    return {p.name: p.default for p in named if p.kind != p.POSITIONAL_ONLY}


def placeholder_value(node: fx.Node, x: torch.Tensor) -> Any:
    """The value of an input node: ``x`` for the image (the first input), the default of any other."""
    return node.args[0] if node.args else x


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls, else None."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_layer(module: nn.Module | None) -> bool:
    """True for the weighted layers the search decides about (convolutions and linear layers)."""
    return isinstance(module, LAYER_TYPES)


def load_args(arg: Any, env: dict[fx.Node, Any]) -> Any:
    return fx.node.map_arg(arg, lambda n: env[n])


def run_node(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Execute one node given the values of its inputs in ``env``."""
    args, kwargs = load_args(node.args, env), load_args(node.kwargs, env)
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    if node.op == "get_attr":
        obj: Any = gm
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        return obj
    if node.op == "output":
        return args[0]
    raise ValueError(f"unexpected fx node op {node.op!r}")


def last_uses(nodes: list[fx.Node]) -> dict[fx.Node, int]:
    """Node -> the position in ``nodes`` of the last node that reads its value (its own position when none does)."""
    last = {node: i for i, node in enumerate(nodes)}
    for i, node in enumerate(nodes):
        for source in node.all_input_nodes:
            last[source] = i  # nodes run in order: the latest reader is the last one seen
    return last


def forget_dead(env: dict[fx.Node, Any], node: fx.Node, i: int, last: dict[fx.Node, int], keep: Any) -> None:
    """Drop from ``env`` the inputs of ``node`` (at position ``i``) that no later node reads, unless in ``keep``
    (None keeps every value): a large network's activations need not all be held at once."""
    if keep is None:
        return
    for source in node.all_input_nodes:
        if last.get(source, len(last)) <= i and source not in keep:
            env.pop(source, None)


@torch.no_grad()
def propagate(gm: fx.GraphModule, x: torch.Tensor, keep: Collection[fx.Node] | None = None) -> dict[fx.Node, Any]:
    """Run ``gm`` on ``x`` node by node and return every node's value (eval mode, no grad); with ``keep``, only the
    values of those nodes and of the output are returned, and each other value is dropped once no node needs it."""
    was_training = gm.training
    gm.eval()
    env: dict[fx.Node, Any] = {}
    nodes = list(gm.graph.nodes)
    last = last_uses(nodes) if keep is not None else {}
    keep = None if keep is None else {*keep, *(n for n in nodes if n.op == "output")}
    try:
        for i, node in enumerate(nodes):
            env[node] = placeholder_value(node, x) if node.op == "placeholder" else run_node(gm, node, env)
            forget_dead(env, node, i, last, keep)
    finally:
        gm.train(was_training)
    return env


#: free_copies collects when a copy holds at least this many bytes of weights (a collection costs about 0.2 s)
COLLECT_BYTES = 32 * 2**20


def free_copies(model: nn.Module) -> None:
    """Free the copies of ``model`` that surgery left behind, when they are large enough to matter.

    A traced GraphModule sits in reference cycles (its graph, nodes and owning module point at one another), so a
    discarded copy, weights and all, waits for Python's cycle collector, which counts objects, not bytes: ``analyze``
    traces a copy per removal check, and on maxvit_t (30M parameters) the process grew by about 1.2 GB every ten
    layers until it was killed; collected after each check, it stays at 2 GB.
    """
    if sum(p.numel() * p.element_size() for p in model.parameters()) >= COLLECT_BYTES:
        gc.collect()


def ancestors(node: fx.Node) -> set[fx.Node]:
    """All nodes ``node`` depends on (not including itself)."""
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


def residual_merges(gm: fx.GraphModule) -> list[tuple[fx.Node, list[fx.Node], list[fx.Node]]]:
    """Element-wise merges of two tensors that share an ancestor: residual additions, gates.

    Returns:
        ``(merge_node, branch_a, branch_b)`` where each branch lists, in execution order, the nodes that only that
        operand depends on (including the operand itself). An identity shortcut has an empty branch.
    """
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    merges = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in ELEMENTWISE_BINARY:
            continue
        tensors = [a for a in node.args[:2] if isinstance(a, fx.Node)]
        if len(tensors) != 2:
            continue
        a, b = tensors
        anc_a, anc_b = ancestors(a) | {a}, ancestors(b) | {b}
        if not anc_a & anc_b:
            continue
        branch_a = sorted(anc_a - anc_b, key=order.__getitem__)
        branch_b = sorted(anc_b - anc_a, key=order.__getitem__)
        merges.append((node, branch_a, branch_b))
    return merges
