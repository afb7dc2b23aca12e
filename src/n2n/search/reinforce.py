"""REINFORCE with an exponential-moving-average baseline (Williams 1992; Ashok et al. 2018, eq. 2)."""

from __future__ import annotations

from collections.abc import Sequence

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
