"""Which normalization a model gets: what the user asks for, else what its ``spec.json`` records, else (a teacher that
records none: an import path, a zoo name with ``--weights``) the candidate it scores best with on validation.

A teacher fed other numbers than it was trained on scores near chance, and every student distilled from it inherits
that; measuring the few usual candidates costs a few validation passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from torch import nn

from n2n.data import DataBundle
from n2n.data.normalize import Normalization, candidates, fixed_normalization, renormalize
from n2n.models.io import ModelSpec
from n2n.train.compute import CPU, Compute
from n2n.train.evaluate import accuracy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NormalizationChoice:
    """The normalization a model gets and how it was chosen.

    Attributes:
        normalization: ``(pixels - mean) / std`` per channel.
        how: ``given`` (``--normalize``), ``recorded`` (its ``spec.json``) or ``measured`` (the best candidate).
        val_accuracy: validation accuracy per candidate name (``data``, ``none``, ``imagenet``) when measured.
        recorded: what the model's ``spec.json`` records (None: nothing).
    """

    normalization: Normalization
    how: str
    val_accuracy: dict[str, float] = field(default_factory=dict)
    recorded: Normalization | None = None

    @property
    def name(self) -> str:
        """The candidate picked when measured, else a description (``none``, ``mean 0.13 std 0.31``)."""
        if self.val_accuracy:
            return max(self.val_accuracy, key=self.val_accuracy.__getitem__)
        return self.normalization.describe()

    @property
    def overrides(self) -> bool:
        """``--normalize`` replaced a different recorded normalization."""
        return self.how == "given" and self.recorded is not None and self.recorded != self.normalization


def choose_normalization(
    choice: str | Normalization,
    model: nn.Module,
    spec: ModelSpec,
    data: DataBundle,
    batch_size: int | None = None,
    compute: Compute = CPU,
) -> NormalizationChoice:
    """The normalization ``model`` gets on ``data`` for ``--normalize choice`` (see :mod:`n2n.data.normalize`).

    ``auto`` uses what ``spec`` records; a spec that records nothing gets the candidate with the best validation
    accuracy (the first on a tie: ``data`` is n2n's own convention).
    """
    recorded = Normalization.from_spec(spec.normalization)
    channels = data.input_shape[0]
    if choice != "auto":
        given = fixed_normalization(choice, channels, data.stats, data.name)
        return NormalizationChoice(given, "given", recorded=recorded)
    if recorded is not None:
        return NormalizationChoice(recorded, "recorded", recorded=recorded)
    scores = {
        name: accuracy(model, renormalize(data.val.x, data.normalization, norm), data.val.y, batch_size, compute)
        for name, norm in candidates(channels, data.stats).items()
    }
    best = max(scores, key=scores.__getitem__)  # max keeps the first of equal scores
    log.info("normalization %s picked by validation accuracy %s", best, scores)
    return NormalizationChoice(fixed_normalization(best, channels, data.stats), "measured", scores)


def match_teacher(spec: ModelSpec, data: DataBundle) -> tuple[ModelSpec, DataBundle]:
    """``data`` normalised as ``spec`` records; a spec that records nothing gets ``data``'s normalization recorded."""
    recorded = Normalization.from_spec(spec.normalization)
    if recorded is None:
        return replace(spec, normalization=data.normalization.to_spec()), data
    return spec, data.normalized(recorded)
