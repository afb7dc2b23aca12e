"""The edits that turn a teacher into a student, as plain data: what a saved student is rebuilt from."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from n2n.errors import SurgeryError
from n2n.surgery._fx import free_copies
from n2n.surgery.count import count_params
from n2n.surgery.remove import remove_layers
from n2n.surgery.shrink import shrink_layers


@dataclass(frozen=True)
class Edits:
    """Layers removed (stage 1) and keep-fractions of output channels (stage 2), in application order."""

    removed: tuple[str, ...] = ()
    keep: tuple[tuple[str, float], ...] = ()

    @classmethod
    def make(cls, removed: Iterable[str] = (), keep: Mapping[str, float] | None = None) -> Edits:
        """Canonical form: removals sorted, keep-fractions of 1 dropped, fractions rounded to 4 places."""
        kept = tuple((name, round(float(f), 4)) for name, f in (keep or {}).items() if f < 1.0)
        return cls(removed=tuple(sorted(removed)), keep=kept)

    def then(self, other: Edits) -> Edits:
        """These edits followed by ``other``."""
        return Edits.make(self.removed + other.removed, dict(self.keep + other.keep))

    def key(self) -> str:
        """A stable string identifying the architecture these edits produce (reward-cache key)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_dict(self) -> dict:
        return {"removed": list(self.removed), "keep": [[name, f] for name, f in self.keep]}

    @classmethod
    def from_dict(cls, data: Mapping) -> Edits:
        return cls.make(data.get("removed", ()), {str(name): float(f) for name, f in data.get("keep", ())})


def apply_edits(model: nn.Module, edits: Edits, example: torch.Tensor, protected: Iterable[str] = ()) -> nn.Module:
    """A new network: ``model`` with ``edits`` applied (removals first, then shrinkage). ``model`` is untouched.

    Raises:
        SurgeryError: an edit cannot produce a working network.
    """
    student = remove_layers(model, edits.removed, example)
    if edits.keep:
        student = shrink_layers(student, dict(edits.keep), example, protected)
        free_copies(model)  # the stage-1 copy shrink_layers worked from
    if edits.removed or edits.keep:
        before, after = count_params(model), count_params(student)
        if after >= before:  # e.g. removing a bottleneck layer widens the layer after it
            raise SurgeryError("", f"the edits do not make the network smaller ({after:,} >= {before:,} parameters)")
    return student
