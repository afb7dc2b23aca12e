"""REINFORCE advantages: an exponential-moving-average baseline (Williams 1992; Ashok et al. 2018, eq. 2; the
default), batch-normalised, or a risk-seeking threshold that trains on the best samples only (Petersen et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class EmaBaseline:
    """``b``: an exponential moving average of the mean reward of past updates."""

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self.value: float | None = None

    def advantages(self, rewards: Sequence[float]) -> list[float]:
        """``R_k - b``; before the first update ``b`` is the batch mean, so the first batch is centred."""
        b = self.value if self.value is not None else sum(rewards) / len(rewards)
        return [r - b for r in rewards]

    def update(self, rewards: Sequence[float]) -> None:
        mean = sum(rewards) / len(rewards)
        self.value = mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean

    def state_dict(self) -> dict[str, float | None]:
        return {"decay": self.decay, "value": self.value}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.decay, self.value = float(state["decay"]), state["value"]


class RiskSeekingBaseline:
    """``b``: the ``1 - epsilon`` quantile of every reward sampled so far in the stage, the current batch included;
    advantages are ``max(R_k - b, 0)``.

    The search keeps the best student it sees, not the average one, so only samples in the top ``epsilon`` fraction
    push the policy (the risk-seeking policy gradient of Petersen et al. 2021, "Deep symbolic regression", eq. 3).
    A batch of 5 is too small to hold a quantile, so the quantile runs over the stage's history. ``value`` is the
    last threshold, for the logs.
    """

    def __init__(self, epsilon: float = 0.2) -> None:
        if not 0 < epsilon <= 1:
            raise ValueError(f"epsilon must be in (0, 1]; got {epsilon}")
        self.epsilon = epsilon
        self.history: list[float] = []
        self.value: float | None = None

    def advantages(self, rewards: Sequence[float]) -> list[float]:
        pool = torch.tensor([*self.history, *rewards], dtype=torch.float64)
        self.value = float(torch.quantile(pool, 1 - self.epsilon))
        return [max(r - self.value, 0.0) for r in rewards]

    def update(self, rewards: Sequence[float]) -> None:
        self.history.extend(float(r) for r in rewards)

    def state_dict(self) -> dict[str, float | list[float] | None]:
        return {"epsilon": self.epsilon, "history": list(self.history), "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.epsilon, self.history, self.value = float(state["epsilon"]), list(state["history"]), state["value"]


class BatchBaseline:
    """Advantages ``(R_k - mean(R)) / std(R)`` over the update's own samples (0 when they all score the same).

    A centred, unit-scale signal every update, whatever the reward's range: a stage-2 batch whose rewards differ by
    0.005 moves the policy as much as a stage-1 batch that spans invalid (R = -1) and good students. ``value`` is
    the last batch mean, for the logs.
    """

    def __init__(self) -> None:
        self.value: float | None = None

    def advantages(self, rewards: Sequence[float]) -> list[float]:
        r = torch.tensor(list(rewards), dtype=torch.float64)
        self.value = float(r.mean())
        std = float(r.std(correction=0))
        return [0.0] * len(rewards) if std < 1e-12 else ((r - r.mean()) / std).tolist()

    def update(self, rewards: Sequence[float]) -> None:
        pass

    def state_dict(self) -> dict[str, float | None]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        self.value = state["value"]


Baseline = EmaBaseline | RiskSeekingBaseline | BatchBaseline
#: ``--advantage`` name -> the baseline it builds from (decay, risk_epsilon)
_BASELINES: dict[str, Callable[[float, float], Baseline]] = {
    "batch": lambda decay, epsilon: BatchBaseline(),
    "ema": lambda decay, epsilon: EmaBaseline(decay),
    "risk": lambda decay, epsilon: RiskSeekingBaseline(epsilon),
}
ADVANTAGES = tuple(_BASELINES)


def make_baseline(advantage: str, decay: float = 0.8, risk_epsilon: float = 0.2) -> Baseline:
    """The baseline ``--advantage`` names: ``batch``, ``ema`` (decay ``decay``) or ``risk`` (top ``risk_epsilon``)."""
    if advantage not in _BASELINES:
        raise ValueError(f"advantage must be one of {', '.join(ADVANTAGES)}; got {advantage!r}")
    return _BASELINES[advantage](decay, risk_epsilon)


def reinforce_loss(
    log_probs: torch.Tensor, advantages: torch.Tensor, entropies: torch.Tensor | None = None, entropy_coef: float = 0.0
) -> torch.Tensor:
    """Policy-gradient loss whose gradient is ``-(1/m) sum_k sum_t grad log pi(a_t | h_t) (R_k - b)``.

    ``loss = -mean_k(log_prob_k * A_k) - entropy_coef * mean_k(entropy_k)``; each rollout keeps its own advantage.
    """
    loss = -(log_probs * advantages.detach()).mean()
    if entropies is not None and entropy_coef:
        loss = loss - entropy_coef * entropies.mean()
    return loss
