"""How pixels in [0, 1] become a model's inputs: ``(pixels - mean) / std`` per channel, and the ``--normalize`` values.

A teacher gets the numbers it was trained on, or it scores near chance: the training split's statistics (``data``,
what n2n's own teachers are trained with), plain [0, 1] pixels (``none``, torchvision's ``ToTensor``), ImageNet's
statistics (``imagenet``, most pretrained RGB networks) or the user's own ``MEAN,STD``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from n2n.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NAMES = ("auto", "data", "none", "imagenet")
USAGE = (
    "--normalize must be auto, data, none, imagenet or MEAN,STD (one channel: 0.5,0.25; several: one value per "
    "channel joined by '/', e.g. 0.485/0.456/0.406,0.229/0.224/0.225)"
)


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``x = (pixels - mean) / std`` of pixels in [0, 1]: what a model's ``spec.json`` records."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def identity(cls, channels: int) -> Normalization:
        """``--normalize none``: pixels in [0, 1] as they are (mean 0, std 1)."""
        return cls((0.0,) * channels, (1.0,) * channels)

    @classmethod
    def from_spec(cls, record: Mapping[str, Any]) -> Normalization | None:
        """A checked ``spec.json`` ``normalization`` record; None when it records none (``{}``)."""
        if not record:
            return None
        return cls(tuple(float(v) for v in record["mean"]), tuple(float(v) for v in record["std"]))

    def to_spec(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    def describe(self) -> str:
        """``none``, ``imagenet``, or ``mean 0.131 std 0.308`` (per channel ``mean 0.49/0.48/0.45 std ...``)."""
        if self == Normalization.identity(len(self.mean)):
            return "none"
        if self == Normalization(IMAGENET_MEAN, IMAGENET_STD):
            return "imagenet"
        return f"mean {'/'.join(f'{v:.4g}' for v in self.mean)} std {'/'.join(f'{v:.4g}' for v in self.std)}"


def parse_normalize(text: str) -> str | Normalization:
    """``--normalize`` as given: one of :data:`NAMES`, or ``MEAN,STD`` (per channel ``M1/M2/M3,S1/S2/S3``).

    The channel count is checked against the data later (:func:`fixed_normalization`); everything else here, before
    any work starts.
    """
    if text in NAMES:
        return text
    try:
        values = [tuple(float(v) for v in part.split("/")) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2:
        raise ConfigError(f"{USAGE}; got {text!r}")
    mean, std = values
    if len(mean) != len(std):
        raise ConfigError(
            f"--normalize {text}: {len(mean)} mean(s) but {len(std)} std(s); give one of each per channel"
        )
    if not all(math.isfinite(v) for v in mean + std):
        raise ConfigError(f"--normalize {text}: mean and std must be finite numbers")
    if not all(v > 0 for v in std):
        raise ConfigError(f"--normalize {text}: std must be positive (inputs are divided by it)")
    return Normalization(mean, std)


def fixed_normalization(
    choice: str | Normalization, channels: int, stats: Normalization | None = None, data: str = "the data"
) -> Normalization:
    """The normalization a fixed choice (``data``, ``none``, ``imagenet``, ``MEAN,STD``) gives inputs of ``channels``
    channels; ``stats`` are the training split's (``data``), ``data`` names the data set in errors."""
    if isinstance(choice, Normalization):
        if len(choice.mean) != channels:
            raise ConfigError(
                f"--normalize gives {len(choice.mean)} channel value(s) but {data} has {channels} channel(s): give "
                "one mean and one std per channel"
            )
        return choice
    if choice == "none":
        return Normalization.identity(channels)
    if choice == "imagenet":
        if channels != 3:
            raise ConfigError(
                f"--normalize imagenet is for 3-channel (RGB) inputs but {data} has {channels} channel(s): use data, "
                "none or MEAN,STD"
            )
        return Normalization(IMAGENET_MEAN, IMAGENET_STD)
    if choice == "data":
        if stats is None:
            raise ConfigError("--normalize data uses the training split's statistics: it needs --data")
        return stats
    raise ConfigError(f"{USAGE}; got {choice!r}")


def candidates(channels: int, stats: Normalization) -> dict[str, Normalization]:
    """What ``--normalize auto`` tries on a teacher that records no normalization, in order of preference."""
    names = ("data", "none", "imagenet") if channels == 3 else ("data", "none")
    return {name: fixed_normalization(name, channels, stats) for name in names}


def renormalize(x: torch.Tensor, old: Normalization, new: Normalization) -> torch.Tensor:
    """Inputs ``x`` (N, C, ...) normalised with ``old``, normalised with ``new`` instead (pixels = x * std + mean)."""
    if old == new:
        return x
    shape = (1, -1) + (1,) * (x.dim() - 2)

    def column(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=x.dtype).view(shape)

    pixels = x * column(old.std) + column(old.mean)
    return ((pixels - column(new.mean)) / column(new.std)).contiguous()
