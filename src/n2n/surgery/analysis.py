"""What the search can change: the layers of a network in execution order, with their features and constraints."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
from torch import fx, nn

from n2n.errors import SurgeryError
from n2n.surgery._fx import free_copies, is_layer, propagate, residual_merges, trace
from n2n.surgery.count import count_macs, count_params, layer_macs
from n2n.surgery.remove import call_sites, remove_layers
from n2n.surgery.shrink import (
    UNEVEN,
    coupled_layers,
    dependency_graph,
    group_layers,
    index_blowup,
    shrink_layers,
    uneven_mapping,
)

#: The per-layer features the policies read, in order (see :func:`layer_features`); saved with every policy.
FEATURE_NAMES = (
    "is_conv",
    "is_depthwise",
    "is_linear",
    "log2_kernel/3",
    "log2_stride",
    "padding/3",
    "log2_out_channels/10",
    "log2_in_channels/10",
    "skip_start/8",
    "skip_end/8",
    "relative_index",
    "log10_params/8",
)
#: Length of the per-layer feature vector the policies read.
FEATURE_DIM = len(FEATURE_NAMES)


@dataclass(frozen=True)
class LayerInfo:
    """One convolution or linear layer, as the policies and ``n2n inspect`` see it."""

    index: int
    name: str
    kind: str  # "conv" | "depthwise" | "linear"
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    output_shape: tuple[int, ...]  # one sample, no batch dimension
    params: int
    macs: int
    skip_start: int  # layers since the start of the innermost residual branch holding it (0: none)
    skip_end: int  # layers to the end of that branch, itself included (0: none)
    removable: bool
    remove_reason: str  # why not removable ("" when it is)
    shrinkable: bool  # decides its coupled group's keep-fraction in stage 2
    shrink_reason: str
    coupled: tuple[str, ...]  # layers whose output channels are tied to this one's


@dataclass(frozen=True)
class Analysis:
    """A network's decision layers and totals for a given input shape."""

    layers: tuple[LayerInfo, ...]
    input_shape: tuple[int, ...]
    num_outputs: int
    params: int
    macs: int

    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def features(self) -> torch.Tensor:
        """(T, FEATURE_DIM) float tensor, one row per layer in execution order."""
        return torch.tensor([layer_features(layer, len(self.layers)) for layer in self.layers], dtype=torch.float32)

    def removable(self) -> torch.Tensor:
        return torch.tensor([layer.removable for layer in self.layers], dtype=torch.bool)

    def shrinkable(self) -> torch.Tensor:
        return torch.tensor([layer.shrinkable for layer in self.layers], dtype=torch.bool)

    def protected(self) -> list[str]:
        """Layers whose output size may never change (classifier heads)."""
        return [layer.name for layer in self.layers if layer.shrink_reason == HEAD]

    def to_dict(self) -> dict:
        return asdict(self)


HEAD = "classifier head (its outputs are the classes)"


def layer_features(layer: LayerInfo, num_layers: int) -> list[float]:
    """Normalised features of a layer (the paper's type, kernel, stride, padding, outputs, skip-start, skip-end).

    Widths are on a log2 scale and types one-hot, unlike the original code's raw integers.
    """
    return [
        float(layer.kind == "conv"),
        float(layer.kind == "depthwise"),
        float(layer.kind == "linear"),
        math.log2(layer.kernel) / 3.0,
        math.log2(layer.stride),
        layer.padding / 3.0,
        math.log2(layer.out_channels) / 10.0,
        math.log2(layer.in_channels) / 10.0,
        layer.skip_start / 8.0,
        layer.skip_end / 8.0,
        layer.index / max(1, num_layers - 1),
        math.log10(max(1, layer.params)) / 8.0,
    ]


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    return "depthwise" if module.groups > 1 and module.groups == module.in_channels else "conv"


def _first(value: int | tuple[int, ...] | str) -> int:
    if isinstance(value, str):  # padding="same" / "valid"
        return 0
    return int(max(value)) if isinstance(value, tuple) else int(value)


def _heads(gm: fx.GraphModule, layer_nodes: list[fx.Node]) -> set[str]:
    """Layers from whose output the network's output is reachable without passing another layer."""
    layer_set = set(layer_nodes)
    heads = set()
    for node in layer_nodes:
        stack, seen = list(node.users), set()
        while stack:
            n = stack.pop()
            if n in seen or n in layer_set:
                continue
            seen.add(n)
            if n.op == "output":
                heads.add(str(node.target))
                break
            stack.extend(n.users)
    return heads


def _skip_positions(gm: fx.GraphModule) -> dict[str, tuple[int, int]]:
    """Layer -> (skip_start, skip_end) inside the innermost residual branch that holds it."""
    found: dict[str, tuple[int, int, int]] = {}
    for _, branch_a, branch_b in residual_merges(gm):
        for branch in (branch_a, branch_b):
            names = [str(n.target) for n in branch if n.op == "call_module" and is_layer(gm.get_submodule(n.target))]
            for i, name in enumerate(names):
                if name not in found or len(names) < found[name][2]:
                    found[name] = (i + 1, len(names) - i, len(names))
    return {name: (start, end) for name, (start, end, _) in found.items()}


def analyze(
    model: nn.Module,
    input_shape: Sequence[int],
    fix: Sequence[str] = (),
    check_removals: bool = True,
    check_shrinks: bool = True,
) -> Analysis:
    """Enumerate the decision layers of ``model`` in execution order.

    Args:
        model: any torch.fx-traceable classifier (not modified).
        input_shape: one sample's shape, e.g. ``(1, 28, 28)``.
        fix: glob patterns on module names held out of both stages.
        check_removals: try removing each layer on its own and mark it fixed when that fails or leaves the network
            no smaller (removing a 1x1 reduction widens the layer after it).
        check_shrinks: halve every shrinkable layer at once and, if that fails, find by bisection the layers whose
            halving fails and mark them fixed (Torch-Pruning cannot follow a zero-pad, a class token, ...), so that
            no decision offered is one that cannot work.
    """
    input_shape = tuple(int(d) for d in input_shape)
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    gm = trace(model)
    sites = call_sites(gm)
    layer_nodes = [n for n in gm.graph.nodes if n.op == "call_module" and is_layer(gm.get_submodule(n.target))]
    first_site = {}
    for node in layer_nodes:
        first_site.setdefault(str(node.target), node)
    layer_nodes = list(first_site.values())
    env = propagate(gm, example, keep=layer_nodes)
    output = env[next(n for n in gm.graph.nodes if n.op == "output")]
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        raise SurgeryError("", "the network must return one (batch, classes) tensor of logits")
    heads = _heads(gm, layer_nodes)
    skips = _skip_positions(gm)
    try:
        dg, no_graph = dependency_graph(model, example), ""
    except SurgeryError as err:  # e.g. ShuffleNet's channel shuffle: removals still work, shrinking cannot
        dg, no_graph = None, err.reason
    params = count_params(model)

    def held(name: str) -> str:
        if name in heads:
            return HEAD
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in fix):
            return "held by --fix"
        if len(sites[name]) > 1:
            return f"called {len(sites[name])} times in forward()"
        return ""

    fixed = {str(n.target): held(str(n.target)) for n in layer_nodes}
    order = {name: i for i, name in enumerate(fixed)}
    layers = []
    for index, node in enumerate(layer_nodes):
        name = str(node.target)
        module = gm.get_submodule(name)
        out = env[node]
        remove_reason = fixed[name] or (_removal_failure(model, name, example, params) if check_removals else "")
        free_copies(model)  # each removal check traced a copy of the network
        out_channels = module.out_features if isinstance(module, nn.Linear) else module.out_channels
        try:
            if no_graph and not fixed[name]:
                raise SurgeryError(name, no_graph)
            held_back = fixed[name] or index_blowup(dg, model, name)
            if held_back:
                coupled, shrink_reason = (name,), held_back
            else:
                coupled = tuple(c for c in coupled_layers(dg, model, name) if c in fixed)
                group = group_layers(dg, model, name)
                shrink_reason = _shrink_failure(name, coupled, fixed, order, out_channels, group)
            if not shrink_reason:
                uneven = uneven_mapping(dg, model, name)
                shrink_reason = f"{UNEVEN}: {uneven}" if uneven else ""
        except SurgeryError as err:  # no dependency graph, or Torch-Pruning ran out of time or memory on this group:
            coupled, shrink_reason = (name,), err.reason  # it would on the next groups too, so none is tried after it
            no_graph = no_graph or err.reason
        is_linear = isinstance(module, nn.Linear)
        start, end = skips.get(name, (0, 0))
        layers.append(
            LayerInfo(
                index=index,
                name=name,
                kind=_kind(module),
                in_channels=module.in_features if is_linear else module.in_channels,
                out_channels=out_channels,
                kernel=1 if is_linear else _first(module.kernel_size),
                stride=1 if is_linear else _first(module.stride),
                padding=0 if is_linear else _first(module.padding),
                output_shape=tuple(out.shape[1:]),
                params=count_params(module),
                macs=layer_macs(module, out),
                skip_start=start,
                skip_end=end,
                removable=not remove_reason,
                remove_reason=remove_reason,
                shrinkable=not shrink_reason,
                shrink_reason=shrink_reason,
                coupled=tuple(sorted(coupled, key=order.__getitem__)),
            )
        )
    if check_shrinks:
        failures = _failing_shrinks(model, [layer.name for layer in layers if layer.shrinkable], example, heads)
        layers = [
            replace(layer, shrinkable=False, shrink_reason=failures[layer.name]) if layer.name in failures else layer
            for layer in layers
        ]
    return Analysis(
        layers=tuple(layers),
        input_shape=input_shape,
        num_outputs=int(output.shape[1]),
        params=count_params(model),
        macs=count_macs(model, input_shape),
    )


def _removal_failure(model: nn.Module, name: str, example: torch.Tensor, params: int) -> str:
    try:
        student = remove_layers(model, [name], example)
    except SurgeryError as err:
        return f"removing it breaks the network: {err.reason}"
    if count_params(student) >= params:
        return "removing it does not make the network smaller (the layers after it widen)"
    return ""


def _failing_shrinks(model: nn.Module, names: list[str], example: torch.Tensor, protected: set[str]) -> dict[str, str]:
    """Layer -> why halving it fails, for the layers of ``names`` whose halving fails (bisection: one trial when
    all of them work, about ``k log n`` when ``k`` of ``n`` do not)."""
    if not names:
        return {}
    try:
        shrink_layers(model, dict.fromkeys(names, 0.5), example, tuple(protected))
        reason = ""
    except SurgeryError as err:
        reason = err.reason
    # bisect outside the handler: its traceback holds the failed trial's copy and dependency graph, activations
    # and all (on maxvit_t at 224x224 over a GB a level), and the copies sit in reference cycles
    free_copies(model)
    if not reason:
        return {}
    if len(names) == 1:
        return {names[0]: f"shrinking it breaks the network: {reason}"}
    half = len(names) // 2
    return {
        **_failing_shrinks(model, names[:half], example, protected),
        **_failing_shrinks(model, names[half:], example, protected),
    }


def _shrink_failure(
    name: str,
    coupled: tuple[str, ...],
    fixed: dict[str, str],
    order: dict[str, int],
    out_channels: int,
    group: dict[str, nn.Module],
) -> str:
    if out_channels < 2:
        return "has a single output channel"
    if not coupled:  # the group holds no decision layer producing these channels: they are the network's input
        return "its channels are the network's input channels (a depthwise convolution on the input)"
    held = [c for c in coupled if fixed[c]]
    if held:
        return f"shares its output channels with {held[0]} ({fixed[held[0]]})"
    grouped = [n for n, m in group.items() if isinstance(m, nn.modules.conv._ConvNd) and 1 < m.groups < m.in_channels]
    if grouped:
        conv = group[grouped[0]]
        return (
            f"its channels feed the grouped convolution {grouped[0]} (groups={conv.groups}), which Torch-Pruning "
            "cannot cut group by group"
        )
    leader = min(coupled, key=order.__getitem__)
    if leader != name:
        return f"shares its output channels with {leader}, which decides for both"
    return ""


def unmatched_patterns(analysis: Analysis, patterns: Sequence[str]) -> list[str]:
    """The ``--fix`` glob patterns that match none of the analysed layers (each is almost surely a typo)."""
    names = [layer.name for layer in analysis.layers]
    return [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name in names)]
