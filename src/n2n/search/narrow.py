"""Scoring a removal at the size the user asked for (``--removal-scoring narrowed``).

A removal student as it comes out of stage 1 is not the size of the final student: the shrink stage narrows it
afterwards. Scored as it is, the removal stage prefers whatever removal reaches the target's size by itself, which
means removing the widest layers until few are left: shallow, wide students, which the later stages cannot deepen
again. Scored narrowed, every removal set is first given one keep-fraction for all its shrinkable layers, the largest
that meets the target, so the removal stage compares depths at equal size (the "remove nothing" set narrowed this
way is uniform channel pruning). The shrink stage then starts from the best removal set as removed, and chooses each
layer's width itself.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

from torch import nn

from n2n.measure import LatencyModel
from n2n.search.candidate import CandidateResult
from n2n.search.reward import Target
from n2n.surgery import Analysis, Edits, count_macs, count_params

log = logging.getLogger(__name__)

#: bisection steps on the keep-fraction: 0.9 / 2**8 < 0.004, finer than a channel of most layers
STEPS = 8


def uniform_fraction(fits: Callable[[float], bool], floor: float, steps: int = STEPS) -> float:
    """The largest keep-fraction ``f`` in ``[floor, 1]`` with ``fits(f)`` (bisection: ``fits`` must hold for every
    fraction below one that holds), rounded down to 4 places; ``floor`` when none fits, 1 when 1 does."""
    if fits(1.0):
        return 1.0
    lo, hi = floor, 1.0
    if not fits(lo):
        return floor
    for _ in range(steps):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return max(floor, math.floor(lo * 10**4) / 10**4)


def meets_when_built(
    build: Callable[[Edits], nn.Module],
    meets: Callable[[int, int, float], bool],
    input_shape: Sequence[int],
    latency: LatencyModel | None = None,
) -> Callable[[Edits], bool]:
    """A test on edits: whether the student they build satisfies ``meets(params, macs, latency_ms)``, its latency
    predicted by ``latency`` (0 without one). Edits the surgery cannot make fail it (a width that cannot be built
    counts as too large, so bisections step past it)."""
    shape = tuple(input_shape)

    def test(edits: Edits) -> bool:
        try:
            student = build(edits)
        except Exception:  # noqa: BLE001 - see the docstring
            return False
        latency_ms = 0.0 if latency is None else latency(student, shape)
        return meets(count_params(student), count_macs(student, shape), latency_ms)

    return test


def size_target(
    target: Target, teacher_macs: int, teacher_latency_ms: float, latency: LatencyModel | None = None
) -> Target:
    """``target`` in what can be known without timing each student: a latency target stays one, met as ``latency``
    predicts it; without a model it becomes a FLOPs target of the same share of the teacher's (latency taken as
    proportional to compute, which overrates what narrowing saves and underrates what removing a layer saves)."""
    if target.latency_ms is None or (latency is None and (teacher_latency_ms <= 0 or teacher_macs <= 0)):
        return Target(params=target.params, flops=target.flops)
    if latency is not None:
        return Target(params=target.params, flops=target.flops, latency_ms=target.latency_ms)
    flops = 2 * teacher_macs * target.latency_ms / teacher_latency_ms
    return Target(params=target.params, flops=flops if target.flops is None else min(flops, target.flops))


class Narrowing:
    """Turns the edits of a removal into that removal narrowed to ``target`` (see the module docstring).

    Args:
        build: the student edits of the teacher make (raises when they cannot).
        analyzed: the layers of the student that edits make (which of them are shrinkable).
        target: the size to meet, in parameters, FLOPs and predicted latency (`size_target`).
        input_shape: one input, to count FLOPs.
        floor: the smallest keep-fraction (the shrink stage's smallest, ``min(--fractions)``).
        latency: what predicts a student's latency, when the target has one.
    """

    def __init__(
        self,
        build: Callable[[Edits], nn.Module],
        analyzed: Callable[[Edits], Analysis],
        target: Target,
        input_shape: Sequence[int],
        floor: float,
        latency: LatencyModel | None = None,
    ) -> None:
        self.build, self.analyzed, self.target, self.floor = build, analyzed, target, floor
        self.latency, self.shape = (latency if target.latency_ms is not None else None), tuple(input_shape)
        self.fits = meets_when_built(build, target.met, input_shape, self.latency)
        self.memo: dict[str, Edits] = {}  # a pure function of the removal: each is narrowed once per run
        self.layers: dict[str, list[str]] = {}  # removal -> its shrinkable layers

    def observe(self, results: Sequence[CandidateResult]) -> None:
        """Tell the latency model, when the target has a latency, what the evaluated ``results`` measured, so that
        later candidates are narrowed to latency as candidates measure it."""
        if self.latency is None:
            return
        for result in results:
            if result.valid and result.latency_ms > 0:
                try:
                    student = self.build(result.edits)
                except Exception:  # noqa: BLE001 - a valid result was built once; nothing to learn if not now
                    continue
                self.latency.observe(student, self.shape, result.latency_ms)

    def __call__(self, removal: Edits) -> Edits:
        key = removal.key()
        if key not in self.memo:
            self.memo[key] = self._narrow(removal)
        return self.memo[key]

    def _shrinkable(self, removal: Edits) -> list[str]:
        key = removal.key()
        if key not in self.layers:
            try:
                self.layers[key] = [layer.name for layer in self.analyzed(removal).layers if layer.shrinkable]
            except Exception as err:  # noqa: BLE001 - the evaluation of the edits as they are reports the reason
                log.debug("cannot narrow %s: %s", removal.key(), err)
                self.layers[key] = []
        return self.layers[key]

    def _narrow(self, removal: Edits) -> Edits:
        layers = self._shrinkable(removal)
        if not layers:
            return removal

        def narrowed(f: float) -> Edits:
            return removal.then(Edits.make(keep={name: f for name in layers}))

        return narrowed(uniform_fraction(lambda f: self.fits(narrowed(f)), self.floor))


class Fitting(Narrowing):
    """Turns the edits of a shrink candidate into the same width profile scaled to ``target``
    (``--shrink-scoring fitted``).

    Every keep-fraction is multiplied by one common factor (each capped at 1), the largest with which the student
    still meets the target: the shrink policy chooses how wide each layer is relative to the others, the target how
    wide they are together. Without it a sampled student is scored at whatever size it came out at, so students over
    the target (about half of a 75K MNIST search's, none of which can be the result) spend evaluations, and those
    under it leave part of the allowed size unused. The factor runs geometrically from the one that takes the
    narrowest layer to ``floor`` to the one that takes it to 1; a student over the target even at the smallest is
    left at the smallest (the reward's target factor then scores it).

    Args:
        build: the student edits of the teacher make (raises when they cannot).
        analyzed: the layers of the student that edits make (which of them are shrinkable: a layer the choice keeps
            whole is not in its edits, and is scaled too).
        target: the size to meet, in parameters, FLOPs and predicted latency (`size_target`).
        input_shape: one input, to count FLOPs.
        floor: the smallest keep-fraction (``min(--fractions)``).
        latency: what predicts a student's latency, when the target has one.
    """

    def _narrow(self, edits: Edits) -> Edits:  # memoised by Narrowing.__call__: each choice is fitted once per run
        chosen = dict(edits.keep)
        widths = {name: chosen.get(name, 1.0) for name in self._shrinkable(depth_of(edits))}
        if not widths:
            return edits
        narrowest = min(widths.values())

        def scaled(t: float) -> Edits:  # t = 0: the narrowest layer at the floor; t = 1: at 1 (every layer whole)
            scale = self.floor / narrowest * (1 / self.floor) ** t
            return Edits.make(edits.removed, {name: round(min(1.0, f * scale), 4) for name, f in widths.items()})

        return scaled(uniform_fraction(lambda t: self.fits(scaled(t)), 0.0))


def widen_to_target(
    edits: Edits,
    build: Callable[[Edits], nn.Module],
    fits: Callable[[int, int, float], bool],
    input_shape: Sequence[int],
    latency: LatencyModel | None = None,
) -> Edits | None:
    """``edits`` with every keep-fraction scaled up by one common factor (each capped at 1), the largest for which
    ``fits(params, macs, latency_ms)`` still holds (latency as ``latency`` predicts it, 0 without): the student grown
    back to the size the user allows, its layers in the proportions the search chose. None when it cannot grow
    (nothing shrunk, or no larger fraction fits)."""
    if not edits.keep:
        return None
    top = 1 / min(f for _, f in edits.keep)

    def widened(t: float) -> Edits:
        scale = 1 + t * (top - 1)
        return Edits.make(edits.removed, {name: min(1.0, f * scale) for name, f in edits.keep})

    grows = meets_when_built(build, fits, input_shape, latency)
    grown = widened(uniform_fraction(lambda t: grows(widened(t)), 0.0))
    try:  # a fraction a little larger often rounds to the same channels: that is no wider student
        wider = count_params(build(grown)) > count_params(build(edits))
    except Exception:  # noqa: BLE001 - edits the surgery cannot make have nothing to widen
        return None
    return grown if wider else None


def depth_of(edits: Edits) -> Edits:
    """The removals of ``edits`` without their narrowing: what the shrink stage starts from."""
    return Edits.make(removed=edits.removed)


def uniform_keep(edits: Edits) -> float | None:
    """The one keep-fraction of narrowed ``edits`` (None when they keep every channel or differ per layer)."""
    fractions = {f for _, f in edits.keep}
    return fractions.pop() if len(fractions) == 1 else None
