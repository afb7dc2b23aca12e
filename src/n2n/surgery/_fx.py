"""torch.fx plumbing shared by the surgery modules: tracing, value propagation, graph queries."""

from __future__ import annotations

import copy
import operator
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


def trace(model: nn.Module) -> fx.GraphModule:
    """Trace a *copy* of ``model`` with torch.fx; the caller's module is never touched.

    Raises:
        ModelError: naming the construct fx could not trace and the usual workarounds.
    """
    model = copy.deepcopy(model)
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ... depending on the construct
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"torch.fx cannot trace {type(model).__name__}: {first_line}. Workarounds: remove data-dependent "
            "Python control flow from forward(), or make the offending submodule a leaf "
            "(torch.fx.Tracer.is_leaf_module) and hold it with --fix"
        ) from err


def module_of(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls, else None."""
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def is_layer(module: nn.Module | None) -> bool:
    """True for the weighted layers the search decides about (convolutions and linear layers)."""
    return isinstance(module, LAYER_TYPES)


def _load(arg: Any, env: dict[fx.Node, Any]) -> Any:
    return fx.node.map_arg(arg, lambda n: env[n])


def run_node(gm: fx.GraphModule, node: fx.Node, env: dict[fx.Node, Any]) -> Any:
    """Execute one node given the values of its inputs in ``env``."""
    args, kwargs = _load(node.args, env), _load(node.kwargs, env)
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


@torch.no_grad()
def propagate(gm: fx.GraphModule, x: torch.Tensor) -> dict[fx.Node, Any]:
    """Run ``gm`` on ``x`` node by node and return every node's value (eval mode, no grad)."""
    was_training = gm.training
    gm.eval()
    env: dict[fx.Node, Any] = {}
    try:
        for node in gm.graph.nodes:
            env[node] = x if node.op == "placeholder" else run_node(gm, node, env)
    finally:
        gm.train(was_training)
    return env


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
