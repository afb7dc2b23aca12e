"""The two policies: a bidirectional LSTM that keeps or removes layers, an autoregressive LSTM that shrinks them.

Both read a (T, FEATURE_DIM) sequence of layer features and work for any T, so a policy trained on one teacher can
start the search on another. Layers that are not decidable (classifier head, held layers) are always kept/full and
add nothing to the log-probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical

from n2n.surgery.analysis import FEATURE_DIM

PAPER_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: Keys of a saved ``policy_*.json`` that describe the file, not the constructor (see ``n2n.search.policy_io``).
SAVED_ONLY = ("kind", "version", "features")


class PolicySample(NamedTuple):
    """One rollout: the actions (T,), their summed log-probability and entropy over decidable steps."""

    actions: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor


class RemovalPolicy(nn.Module):
    """Stage 1: Bernoulli keep/remove per layer from a 2-layer bidirectional LSTM (paper: 30 hidden units)."""

    def __init__(
        self, feature_dim: int = FEATURE_DIM, hidden: int = 30, num_layers: int = 2, init_keep_bias: float = 0.4
    ):
        super().__init__()
        self.args = {
            "feature_dim": feature_dim,
            "hidden": hidden,
            "num_layers": num_layers,
            "init_keep_bias": init_keep_bias,
        }
        self.lstm = nn.LSTM(feature_dim, hidden, num_layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 1)
        with torch.no_grad():  # a fresh policy keeps a layer with probability sigmoid(0.4) = 0.6
            self.head.weight.mul_(0.1)
            self.head.bias.fill_(init_keep_bias)

    def keep_logits(self, features: torch.Tensor) -> torch.Tensor:
        """(T, F) -> (T,) logits of KEEP."""
        out, _ = self.lstm(features.unsqueeze(0))
        return self.head(out).squeeze(0).squeeze(-1)

    def keep_probs(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.keep_logits(features))

    def _dist(self, features: torch.Tensor) -> Bernoulli:
        return Bernoulli(logits=self.keep_logits(features))

    def sample(self, features: torch.Tensor, decidable: torch.Tensor, generator: torch.Generator) -> PolicySample:
        dist = self._dist(features)
        u = torch.rand(features.shape[0], generator=generator)
        keep = (u < dist.probs.detach()) | ~decidable
        mask = decidable.float()
        return PolicySample(keep, (dist.log_prob(keep.float()) * mask).sum(), (dist.entropy() * mask).sum())

    def log_prob(
        self, features: torch.Tensor, actions: torch.Tensor, decidable: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dist = self._dist(features)
        mask = decidable.float()
        return (dist.log_prob(actions.float()) * mask).sum(), (dist.entropy() * mask).sum()

    def config(self) -> dict[str, Any]:
        return {"kind": "remove", **self.args}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> RemovalPolicy:
        return cls(**{k: v for k, v in cfg.items() if k not in SAVED_ONLY})


#: how sharply a centred shrink policy starts around its centre: with 4, a centre of 0.25 on the paper's fractions
#: starts with 0.2 and 0.3 at 34% and 41%, 0.4 at 13%, 1.0 at 0.3%
CENTRE_SHARPNESS = 4.0


class ShrinkPolicy(nn.Module):
    """Stage 2: a keep-fraction per layer from a 2-layer LSTM fed its previous action (paper: 50 hidden units)."""

    def __init__(
        self,
        feature_dim: int = FEATURE_DIM,
        choices: Sequence[float] = PAPER_FRACTIONS,
        hidden: int = 50,
        num_layers: int = 2,
        init_full_bias: float = 1.0,
        centre: float | None = None,
    ):
        """``centre``: start with the keep-fractions near it likeliest (a logit of ``-CENTRE_SHARPNESS * |ln(c /
        centre)|`` for choice ``c``) instead of favouring 1.0 by ``init_full_bias``; an initialisation only (not
        recorded: a saved policy's weights carry it)."""
        super().__init__()
        self.choices = tuple(float(c) for c in choices)
        if 1.0 not in self.choices:
            raise ValueError("the shrink policy's choices must include 1.0 (keep everything)")
        self.full = self.choices.index(1.0)
        self.args = {
            "feature_dim": feature_dim,
            "choices": list(self.choices),
            "hidden": hidden,
            "num_layers": num_layers,
            "init_full_bias": init_full_bias,
        }
        # Registered LSTM cells (the original code kept them in a plain list, so they were never trained).
        self.cells = nn.ModuleList(
            nn.LSTMCell(feature_dim + len(self.choices) if i == 0 else hidden, hidden) for i in range(num_layers)
        )
        self.head = nn.Linear(hidden, len(self.choices))
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()
            self.head.bias[self.full] = init_full_bias
            if centre is not None:
                distance = torch.tensor([abs(math.log(c / centre)) for c in self.choices])
                self.head.bias.copy_(-CENTRE_SHARPNESS * distance)

    def _run(
        self,
        features: torch.Tensor,
        decidable: torch.Tensor,
        actions: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> PolicySample:
        hidden = self.cells[0].hidden_size
        state = [(torch.zeros(1, hidden), torch.zeros(1, hidden)) for _ in self.cells]
        prev = torch.zeros(1, len(self.choices))
        chosen, log_prob, entropy = [], torch.zeros(()), torch.zeros(())
        for t in range(features.shape[0]):
            h = torch.cat([features[t : t + 1], prev], dim=1)
            for i, cell in enumerate(self.cells):
                state[i] = cell(h, state[i])
                h = state[i][0]
            dist = Categorical(logits=self.head(h).squeeze(0))
            if not decidable[t]:
                a = self.full
            elif actions is not None:
                a = int(actions[t])
            else:
                a = int(torch.multinomial(dist.probs.detach(), 1, generator=generator))
            if decidable[t]:
                log_prob = log_prob + dist.log_prob(torch.tensor(a))
                entropy = entropy + dist.entropy()
            chosen.append(a)
            prev = torch.zeros(1, len(self.choices))
            prev[0, a] = 1.0
        return PolicySample(torch.tensor(chosen, dtype=torch.long), log_prob, entropy)

    def sample(self, features: torch.Tensor, decidable: torch.Tensor, generator: torch.Generator) -> PolicySample:
        return self._run(features, decidable, None, generator)

    def log_prob(
        self, features: torch.Tensor, actions: torch.Tensor, decidable: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self._run(features, decidable, actions, None)
        return sample.log_prob, sample.entropy

    def fractions(self, actions: torch.Tensor) -> list[float]:
        return [self.choices[int(a)] for a in actions]

    def config(self) -> dict[str, Any]:
        return {"kind": "shrink", **self.args}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ShrinkPolicy:
        return cls(**{k: v for k, v in cfg.items() if k not in SAVED_ONLY})


class BaseChoice(nn.Module):
    """Stage 2 over several stage-1 students (``--shrink-bases``): which one a rollout shrinks.

    A categorical distribution over the ``n`` bases whose logits learn with the shrink policy (REINFORCE on the sum
    of both log-probabilities), so the rollouts move to the base that shrinks best. ``learn=False`` keeps it uniform
    (random search).
    """

    def __init__(self, n: int, learn: bool = True) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n), requires_grad=learn)

    def sample(self, generator: torch.Generator) -> tuple[int, torch.Tensor, torch.Tensor]:
        """A base index, its log-probability and the distribution's entropy."""
        dist = Categorical(logits=self.logits)
        index = int(torch.multinomial(dist.probs.detach(), 1, generator=generator))
        return index, dist.log_prob(torch.tensor(index)), dist.entropy()

    @torch.no_grad()
    def probs(self) -> list[float]:
        return [round(p, 4) for p in torch.softmax(self.logits, 0).tolist()]


class RandomPolicy(nn.Module):
    """The random-search baseline (``--search random``): uniform actions, nothing to learn.

    Removal: each decidable layer is removed with probability 1/2. Shrink: a keep-fraction drawn uniformly from
    ``choices``. It samples with the same interface as the learned policies, so the search loop, the evaluation
    budget and the logs are identical; only the REINFORCE step is skipped.
    """

    def __init__(self, kind: str, choices: Sequence[float] = PAPER_FRACTIONS):
        super().__init__()
        self.kind = kind
        self.choices = tuple(float(c) for c in choices)
        self.full = self.choices.index(1.0)

    def sample(self, features: torch.Tensor, decidable: torch.Tensor, generator: torch.Generator) -> PolicySample:
        n = features.shape[0]
        if self.kind == "remove":
            actions = (torch.rand(n, generator=generator) < 0.5) | ~decidable
        else:
            actions = torch.randint(len(self.choices), (n,), generator=generator)
            actions[~decidable] = self.full
        zero = torch.zeros(())
        return PolicySample(actions.long() if self.kind != "remove" else actions, zero, zero)

    def config(self) -> dict[str, Any]:
        return {"kind": f"random-{self.kind}", "choices": list(self.choices)}
