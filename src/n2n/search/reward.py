"""The N2N reward (Ashok et al. 2018, section 3.3) and its constraint forms. Pure functions of numbers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

INVALID_REWARD = -1.0


#: What ``C`` measures (``--objective``): the cost of a network in that unit, from its parameter count, MACs and
#: measured batch-1 latency in milliseconds.
OBJECTIVES: dict[str, Callable[[float, float, float], float]] = {
    "params": lambda params, macs, latency_ms: params,
    "flops": lambda params, macs, latency_ms: macs,  # FLOPs = 2 MACs: the ratio is the same
    "latency": lambda params, macs, latency_ms: latency_ms,
}


def objective_cost(objective: str, params: float, macs: float, latency_ms: float) -> float:
    """The cost ``C`` compares for ``objective`` (params, flops or latency)."""
    return OBJECTIVES[objective](params, macs, latency_ms)


def compression(cost: float, teacher_cost: float) -> float:
    """Relative compression ``C = 1 - cost / teacher_cost`` (cost: parameters in the paper, or MACs, or latency)."""
    return 1.0 - cost / teacher_cost


def compression_reward(c: float) -> float:
    """``Rc = C (2 - C)``: concave, so compression pays strongly at first and flattens near C = 1."""
    return c * (2.0 - c)


def accuracy_reward(acc: float, teacher_acc: float) -> float:
    """``Ra = A_student / A_teacher``."""
    if teacher_acc <= 0:
        raise ValueError(f"teacher accuracy must be > 0 to normalise the reward; got {teacher_acc}")
    return acc / teacher_acc


def reward(acc: float, teacher_acc: float, cost: float, teacher_cost: float) -> float:
    """``R = Rc * Ra`` with ``C = 1 - cost / teacher_cost``; -1 for a student not cheaper than the teacher.

    ``cost`` is the parameter count in the paper (the default objective), or MACs, or measured latency.
    """
    if cost <= 0 or cost >= teacher_cost:
        return INVALID_REWARD
    return compression_reward(compression(cost, teacher_cost)) * accuracy_reward(acc, teacher_acc)


def epsilon(t: int, horizon: int = 15, power: float = 4.0) -> float:
    """Soft-constraint weight ``eps_t = max(0, 1 - t / horizon) ** power`` after ``t`` policy updates."""
    return max(0.0, 1.0 - t / horizon) ** power


@dataclass(frozen=True)
class Constraints:
    """Optional limits on the student: parameters at most ``max_params``, accuracy at least ``min_accuracy``,
    FLOPs (2 MACs) at most ``max_flops``, measured batch-1 latency at most ``max_latency_ms``."""

    max_params: float | None = None
    min_accuracy: float | None = None
    mode: Literal["hard", "soft"] = "hard"
    max_flops: float | None = None
    max_latency_ms: float | None = None

    def violated(self, params: float, acc: float, macs: float = 0.0, latency_ms: float = 0.0) -> bool:
        too_big = self.max_params is not None and params > self.max_params
        too_weak = self.min_accuracy is not None and acc < self.min_accuracy
        too_costly = self.max_flops is not None and 2 * macs > self.max_flops
        too_slow = self.max_latency_ms is not None and latency_ms > self.max_latency_ms
        return too_big or too_weak or too_costly or too_slow

    def table(self, params: float, acc: float, macs: float = 0.0, latency_ms: float | None = None) -> list[dict]:
        """Each set constraint with its limit, the student's value and whether it held (for reports)."""
        rows = []
        for option, limit, value, held in (
            ("--max-params", self.max_params, params, lambda v, m: v <= m),
            ("--max-flops", self.max_flops, 2 * macs, lambda v, m: v <= m),
            ("--max-latency-ms", self.max_latency_ms, latency_ms, lambda v, m: v is not None and v <= m),
            ("--min-accuracy", self.min_accuracy, acc, lambda v, m: v >= m),
        ):
            if limit is not None:
                rows.append({"option": option, "limit": limit, "value": value, "held": bool(held(value, limit))})
        return rows


def constrained_reward(r: float, violated: bool, mode: str, t: int, horizon: int = 15, power: float = 4.0) -> float:
    """Hard form: -1 when violated. Soft form: ``eps_t (R + 1) - 1``, which starts at R and falls to -1."""
    if not violated:
        return r
    if mode == "hard":
        return INVALID_REWARD
    return epsilon(t, horizon, power) * (r + 1.0) - 1.0


#: MnasNet's exponent (Tan et al. 2019, eq. 2) for a cost above its target: w = -0.07 trades 1% accuracy for about
#: 15% cost. Below the target the exponent is 0, so there only accuracy counts.
TARGET_EXPONENT = -0.07


@dataclass(frozen=True)
class Target:
    """A size the user names (``--target-params``, ``--target-flops``, ``--target-latency-ms``).

    With a target the reward is MnasNet's ``Ra * prod_i (cost_i / target_i) ** w_i``, with ``w_i = 0`` at or under
    target ``i`` and ``exponent`` above it: compression pays only until the target is met, and after that the search
    looks for the most accurate student. The result is the best student that meets every target.
    """

    params: float | None = None
    flops: float | None = None
    latency_ms: float | None = None
    exponent: float = TARGET_EXPONENT

    @property
    def set(self) -> bool:
        return any(t is not None for t in (self.params, self.flops, self.latency_ms))

    def _pairs(self, params: float, macs: float, latency_ms: float) -> list[tuple[float, float]]:
        values = ((self.params, params), (self.flops, 2 * macs), (self.latency_ms, latency_ms))
        return [(value, limit) for limit, value in values if limit is not None]

    def partway(self, share: float, params: float, macs: float = 0.0, latency_ms: float = 0.0) -> Target:
        """A nearer target on the way from the teacher's costs (``params``, ``macs``, ``latency_ms``) to this one:
        each limit becomes ``teacher * (limit / teacher) ** share``, ``share`` of the compression in log scale.

        The removal stage aims at it, so that it leaves the rest of the compression to the shrink stage instead of
        reaching the whole target by removing layers (shallow, wide students). A limit whose teacher cost is
        unknown (0) or already met stays as it is.
        """
        teacher = {"params": params, "flops": 2 * macs, "latency_ms": latency_ms}

        def toward(name: str) -> float | None:
            limit = getattr(self, name)
            if limit is None or teacher[name] <= 0 or limit >= teacher[name]:
                return limit
            return teacher[name] * (limit / teacher[name]) ** share

        return replace(self, params=toward("params"), flops=toward("flops"), latency_ms=toward("latency_ms"))

    def met(self, params: float, macs: float = 0.0, latency_ms: float = 0.0) -> bool:
        return all(value <= limit for value, limit in self._pairs(params, macs, latency_ms))

    def reward(
        self, acc: float, teacher_acc: float, params: float, macs: float = 0.0, latency_ms: float = 0.0
    ) -> float:
        """``Ra`` times a factor below 1 for each target the student is over."""
        factor = 1.0
        for value, limit in self._pairs(params, macs, latency_ms):
            if value > limit:
                factor *= (value / limit) ** self.exponent
        return accuracy_reward(acc, teacher_acc) * factor

    def table(self, params: float, macs: float = 0.0, latency_ms: float | None = None) -> list[dict]:
        """Each set target with its limit, the student's value and whether it was met (for reports)."""
        rows = []
        for option, limit, value in (
            ("--target-params", self.params, params),
            ("--target-flops", self.flops, 2 * macs),
            ("--target-latency-ms", self.latency_ms, latency_ms),
        ):
            if limit is not None:
                rows.append(
                    {"option": option, "limit": limit, "value": value, "held": value is not None and value <= limit}
                )
        return rows
