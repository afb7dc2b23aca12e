"""Stage-2 surgery: shrink layers to a fraction of their output channels with Torch-Pruning.

Torch-Pruning's dependency graph finds every tensor dimension coupled to a layer's output channels (the following
norm and convolutions, both sides of a residual addition, depthwise convolutions), so coupled layers shrink
together. Channels are ranked by group L2 weight magnitude and the strongest are kept, so the student inherits the
teacher's most important filters.
"""

from __future__ import annotations

import contextlib
import copy
import io
import resource
import signal
import threading
import time
from collections.abc import Iterable, Iterator, Mapping

import torch
import torch_pruning as tp
from torch import nn

from n2n.errors import SurgeryError
from n2n.surgery._fx import LAYER_TYPES
from n2n.surgery.repair import ChannelPad


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _prune_fn(module: nn.Module):  # noqa: ANN202 - Torch-Pruning's pruning functions have no public type
    return tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels


#: Bounds on one Torch-Pruning call (building a dependency graph, or finding or cutting one group): on some graphs
#: its search for coupled dimensions runs for many minutes (timm's LeViT) or builds index lists of many GB (swin_t's
#: flattened windows).
TORCH_PRUNING_SECONDS = 120.0
TORCH_PRUNING_BYTES = 4 * 2**30
#: most channel indices a group that cuts all of a layer's channels may track. Torch-Pruning maps a channel through
#: a reshape of channels into windows, heads or a flattened vector as one index per element it touches: one output
#: channel of maxvit_t's fused qkv projection becomes 9,216 indices, so ranking all 768 channels needs 66 million
#: Python objects (many GB) and minutes. Such a layer is not offered for shrinking, and is not shrunk.
MAX_GROUP_INDICES = 2**21


#: why a layer whose channels Torch-Pruning maps unevenly onto a coupled layer is not shrunk
UNEVEN = (
    "the number of channels cutting it removes from a coupled layer depends on which channels are cut (a split or "
    "slice Torch-Pruning maps unevenly: GhostNet's ghost modules, a fused qkv projection)"
)


class _Expired(BaseException):
    """Raised by the alarm inside Torch-Pruning; a BaseException, so that no ``except Exception`` in it swallows it."""


@contextlib.contextmanager
def time_limit(seconds: float, layer: str, what: str) -> Iterator[None]:
    """Raise SurgeryError when the block runs longer than ``seconds`` or allocates more than TORCH_PRUNING_BYTES
    of address space (SIGALRM and RLIMIT_AS: the main thread of a Unix process; elsewhere the block runs unbounded).
    An outer alarm is restored, less the time spent here."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    limits = _limit_memory(TORCH_PRUNING_BYTES)
    start = time.monotonic()
    try:
        yield
    except _Expired:
        raise SurgeryError(layer, f"Torch-Pruning took more than {seconds:g} s to {what}") from None
    except MemoryError:
        gib = TORCH_PRUNING_BYTES / 2**30
        raise SurgeryError(layer, f"Torch-Pruning needed more than {gib:g} GiB to {what}") from None
    finally:
        if limits is not None:
            resource.setrlimit(resource.RLIMIT_AS, limits)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer - (time.monotonic() - start)))


def _limit_memory(extra: int) -> tuple[int, int] | None:
    """Cap the address space at its current size plus ``extra`` bytes; returns the limits to restore (None: unset)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            size = int(f.read().split()[0]) * resource.getpagesize()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + extra if hard == resource.RLIM_INFINITY else min(hard, size + extra)
        if soft != resource.RLIM_INFINITY and soft <= cap:
            return None
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (OSError, ValueError):
        return None
    return soft, hard


class ChannelPadPruner(tp.pruner.function.BasePruningFunc):
    """How Torch-Pruning cuts a :class:`ChannelPad`: its input and output channels apart (no tie between them)."""

    TARGET_MODULES = ChannelPad

    def prune_out_channels(self, layer: ChannelPad, idxs: list[int]) -> ChannelPad:
        keep = torch.ones(layer.channels, dtype=torch.bool)
        keep[list(idxs)] = False
        layer.index = layer.index[keep]
        return layer

    def prune_in_channels(self, layer: ChannelPad, idxs: list[int]) -> ChannelPad:
        cut = torch.zeros(layer.in_channels + 1, dtype=torch.bool)  # the last entry: the zero channel
        cut[list(idxs)] = True
        kept = layer.in_channels - len(idxs)
        # old input -> new input; a cut one and the zero channel -> the new zero channel
        renumber = torch.where(cut, kept, torch.cumsum(~cut, 0) - 1)
        renumber[-1] = kept
        layer.index, layer.in_channels = renumber[layer.index], kept
        return layer

    def get_out_channels(self, layer: ChannelPad) -> int:
        return layer.channels

    def get_in_channels(self, layer: ChannelPad) -> int:
        return layer.in_channels


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model`` (:class:`ChannelPad` cut by :class:`ChannelPadPruner`)."""
    was_training = model.training
    model.eval()  # tracing runs a forward pass: do not touch the BatchNorm statistics
    try:
        with time_limit(TORCH_PRUNING_SECONDS, "", "build the dependency graph"):
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, verbose=False, customized_pruners={ChannelPad: ChannelPadPruner()}
            )
    except SurgeryError:
        raise
    except Exception as err:  # Torch-Pruning raises bare exceptions for graphs it cannot follow
        raise SurgeryError("", f"Torch-Pruning cannot build the dependency graph: {err}") from err
    finally:
        model.train(was_training)


def _one_channel_group(dg: tp.DependencyGraph, model: nn.Module, name: str) -> tp.Group:
    """Torch-Pruning's group for cutting output channel 0 of layer ``name``: its dependencies and their indices."""
    module = model.get_submodule(name)
    with time_limit(TORCH_PRUNING_SECONDS, name, "find the layers coupled to it"):
        return dg.get_pruning_group(module, _prune_fn(module), idxs=[0])


def _group_of(dg: tp.DependencyGraph, model: nn.Module, name: str) -> list[tuple[object, str]]:
    """The dependencies that cutting one output channel of layer ``name`` pulls in, each with its module's name."""
    names = {m: n for n, m in model.named_modules()}
    return [(dep, names.get(dep.target.module, "")) for dep, _ in _one_channel_group(dg, model, name)]


def coupled_layers(dg: tp.DependencyGraph, model: nn.Module, name: str) -> list[str]:
    """Names of the decision layers whose output channels are tied to those of layer ``name`` (itself included)."""
    out_channels = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
    return [
        n
        for dep, n in _group_of(dg, model, name)
        if isinstance(dep.target.module, LAYER_TYPES) and dep.handler in out_channels
    ]


def group_layers(dg: tp.DependencyGraph, model: nn.Module, name: str) -> dict[str, nn.Module]:
    """The convolutions and linear layers that shrinking layer ``name`` cuts, in their outputs or their inputs."""
    return {n: dep.target.module for dep, n in _group_of(dg, model, name) if isinstance(dep.target.module, LAYER_TYPES)}


def _cut_counts(group: tp.Group) -> dict[tuple[str, str], int]:
    """(layer, handler) -> how many of its channels ``group`` cuts, for every convolution and linear layer in it."""
    counts: dict[tuple[str, str], int] = {}
    for dep, idxs in group:
        if isinstance(dep.target.module, LAYER_TYPES):
            key = (dep.target.name, getattr(dep.handler, "__name__", str(dep.handler)))
            counts[key] = max(counts.get(key, 0), len(set(idxs)))
    return counts


def _first_uneven(reference: dict[tuple[str, str], int], other: dict[tuple[str, str], int]) -> str:
    """Where two groups cutting as many channels differ: "a or b of LAYER" for the first such layer, else ""."""
    for key in [*reference, *(k for k in other if k not in reference)]:
        if reference.get(key) != other.get(key):
            return f"{reference.get(key, 0)} or {other.get(key, 0)} channels of {key[0].split(' ')[0]}"
    return ""


def uneven_mapping(dg: tp.DependencyGraph, model: nn.Module, name: str) -> str:
    """Where cutting k channels of ``name`` cuts a coupled layer (or itself) by a number that depends on *which* k
    are cut ("" when every layer's count depends on k alone).

    Torch-Pruning maps indices through concatenations and slices; where a network concatenates two tensors derived
    from one another and slices the result (GhostNet's ghost modules), the same k indices cut 2k channels of one
    layer or fewer, depending on how they pair up. The student's shape would then depend on the teacher's weights
    (which channels are weakest), and a saved student could not be rebuilt from its edits: such layers are not
    offered for shrinking.
    """
    module = model.get_submodule(name)
    channels = _out_channels(module)
    if channels < 3:
        return ""
    # pairs of channels (few indices: Torch-Pruning's index lists grow with them, to GBs on maxvit_t): two neighbours,
    # the last two (a slice that drops the tail), and channels a half, a third or a quarter apart (the two halves of
    # a ghost module, the q, k and v of a fused projection)
    probes = [[0, 1], [channels - 2, channels - 1]]
    probes += [[0, channels // d] for d in (2, 3, 4) if channels % d == 0 and channels // d > 1]
    with time_limit(TORCH_PRUNING_SECONDS, name, "find the layers coupled to it"):
        counts = [_cut_counts(dg.get_pruning_group(module, _prune_fn(module), idxs=idxs)) for idxs in probes]
    for other in counts[1:]:
        uneven = _first_uneven(counts[0], other)
        if uneven:
            return f"cutting 2 channels cuts {uneven}"
    return ""


def index_blowup(dg: tp.DependencyGraph, model: nn.Module, name: str) -> str:
    """Why shrinking layer ``name`` would make Torch-Pruning track more than MAX_GROUP_INDICES channel indices
    ("" when it would not). Measured on the group of one channel, which every layer's cut scales by its width."""
    per_channel = sum(len(idxs) for _, idxs in _one_channel_group(dg, model, name))
    channels = _out_channels(model.get_submodule(name))
    if per_channel * channels <= MAX_GROUP_INDICES:
        return ""
    return (
        f"Torch-Pruning maps one of its channels to {per_channel:,} indices of the tensors coupled to it (a reshape "
        f"into windows, heads or a flat vector), so cutting its {channels:,} channels would track "
        f"{per_channel * channels:,}, more than n2n's bound of {MAX_GROUP_INDICES:,}"
    )


def keep_count(channels: int, fraction: float) -> int:
    """Channels kept for a keep-fraction: ``max(1, round(fraction * channels))``."""
    return max(1, min(channels, round(fraction * channels)))


def shrink_layers(
    model: nn.Module, keep: Mapping[str, float], example: torch.Tensor, protected: Iterable[str] = ()
) -> nn.Module:
    """Return a copy of ``model`` whose layers keep the given fraction of their output channels.

    Layers are processed in the order of ``keep``; a layer whose channels were already cut as part of an earlier
    layer's coupled group is skipped (the first layer of a group decides for all of it).

    Args:
        model: the network; not modified.
        keep: layer name -> keep-fraction in (0, 1]. Fractions of 1 are no-ops.
        example: an input batch the network takes.
        protected: layers whose output channels must not change (the classifier head).

    Raises:
        SurgeryError: a layer is unknown or protected, or the pruned network does not run.
    """
    model = copy.deepcopy(model)
    todo = {name: f for name, f in keep.items() if f < 1.0}
    if not todo:
        return model
    protected = set(protected)
    dg = dependency_graph(model, example)
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    done: set[nn.Module] = set()
    for name, fraction in todo.items():
        if not 0.0 < fraction <= 1.0:
            raise SurgeryError(name, f"keep-fraction {fraction} is outside (0, 1]")
        if name in protected:
            raise SurgeryError(name, "is protected (its output size is fixed)")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise SurgeryError(name, "no such layer") from None
        if module in done:
            continue
        tied = set(coupled_layers(dg, model, name))
        if tied & protected:
            raise SurgeryError(name, f"shares its output channels with {sorted(tied & protected)[0]}, which is fixed")
        channels = _out_channels(module)
        n_cut = channels - keep_count(channels, fraction)
        try:
            # only the layers sharing these output channels are decided here; the next layer, whose inputs shrink
            # with them, still takes its own decision
            done.update(model.get_submodule(n) for n in tied)
            if n_cut == 0:
                continue
            blowup = index_blowup(dg, model, name)
            if blowup:
                raise SurgeryError(name, blowup)
            with time_limit(TORCH_PRUNING_SECONDS, name, "cut its channels"):
                group = dg.get_pruning_group(module, _prune_fn(module), idxs=list(range(channels)))
                scores = imp(group)
                cut = torch.argsort(scores)[:n_cut].tolist()
                group = dg.get_pruning_group(module, _prune_fn(module), idxs=cut)
                reference = dg.get_pruning_group(module, _prune_fn(module), idxs=list(range(n_cut)))
                uneven = _first_uneven(_cut_counts(reference), _cut_counts(group))
                if uneven:  # the shape would depend on the weights: a saved student could not be rebuilt
                    raise SurgeryError(name, f"{UNEVEN}: cutting {n_cut} channels cuts {uneven}")
                if not dg.check_pruning_group(group):
                    raise SurgeryError(name, "cutting its channels would empty a coupled layer")
                group.prune()
        except SurgeryError:
            raise
        except Exception as err:  # Torch-Pruning's own errors carry no type of their own
            raise SurgeryError(name, f"Torch-Pruning could not shrink it: {err}") from err
    _check_runs(model, example)
    return model


@torch.no_grad()
def _check_runs(model: nn.Module, example: torch.Tensor) -> None:
    was_training = model.training
    model.eval()
    try:
        # a failing GraphModule prints its generated code to stderr before raising: keep that off the user's terminal
        with contextlib.redirect_stderr(io.StringIO()):
            model(example)
    except RuntimeError as err:
        raise SurgeryError("", f"the shrunk network does not run: {str(err).splitlines()[0]}") from None
    finally:
        model.train(was_training)
