"""The N2N reward (Ashok et al. 2018, section 3.3) and its constraint forms. Pure functions of numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

INVALID_REWARD = -1.0


def compression(params: float, teacher_params: float) -> float:
    """Relative compression ``C = 1 - params / teacher_params``."""
    return 1.0 - params / teacher_params


def compression_reward(c: float) -> float:
    """``Rc = C (2 - C)``: concave, so compression pays strongly at first and flattens near C = 1."""
    return c * (2.0 - c)


def accuracy_reward(acc: float, teacher_acc: float) -> float:
    """``Ra = A_student / A_teacher``."""
    if teacher_acc <= 0:
        raise ValueError(f"teacher accuracy must be > 0 to normalise the reward; got {teacher_acc}")
    return acc / teacher_acc


def reward(acc: float, teacher_acc: float, params: float, teacher_params: float) -> float:
    """``R = Rc * Ra``; -1 for a student that is not smaller than the teacher (or has no parameters)."""
    if params <= 0 or params >= teacher_params:
        return INVALID_REWARD
    return compression_reward(compression(params, teacher_params)) * accuracy_reward(acc, teacher_acc)


def epsilon(t: int, horizon: int = 15, power: float = 4.0) -> float:
    """Soft-constraint weight ``eps_t = max(0, 1 - t / horizon) ** power`` after ``t`` policy updates."""
    return max(0.0, 1.0 - t / horizon) ** power


@dataclass(frozen=True)
class Constraints:
    """Optional limits on the student: parameters at most ``max_params``, accuracy at least ``min_accuracy``."""

    max_params: float | None = None
    min_accuracy: float | None = None
    mode: Literal["hard", "soft"] = "hard"

    def violated(self, params: float, acc: float) -> bool:
        too_big = self.max_params is not None and params > self.max_params
        too_weak = self.min_accuracy is not None and acc < self.min_accuracy
        return too_big or too_weak


def constrained_reward(r: float, violated: bool, mode: str, t: int, horizon: int = 15, power: float = 4.0) -> float:
    """Hard form: -1 when violated. Soft form: ``eps_t (R + 1) - 1``, which starts at R and falls to -1."""
    if not violated:
        return r
    if mode == "hard":
        return INVALID_REWARD
    return epsilon(t, horizon, power) * (r + 1.0) - 1.0
