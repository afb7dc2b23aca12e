"""Teacher training recipes: epochs, learning rate and its schedule, batch size, optimizer, by name.

``default`` is a short schedule for CPUs (3 epochs of Adam with a cosine decay). ``paper`` follows the schedules
the N2N paper gives for its teachers (Ashok et al., ICLR 2018):

| data | epochs | lr | lr x 0.1 at epochs | batch |
|---|---|---|---|---|
| mnist, fashion-mnist, kmnist | 50 | 0.01 | 30 | 64 |
| cifar10, cifar100, svhn | 150 | 0.001 | 80, 120 | 128 |
| caltech256 | 50 | 0.01 | (none given) | 64 (not given) |

The paper names no optimizer or weight decay for its teachers. We take SGD with momentum 0.9 for the lr-0.01
schedules and Adam for the lr-0.001 ones (the learning rates those optimizers are usually run at), both with weight
decay 5e-4, the value the paper used for its students.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch

from n2n.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """How a classifier is trained with cross-entropy."""

    epochs: int = 3
    """Passes over the training split."""
    lr: float = 1e-3
    """Initial learning rate."""
    batch_size: int = 128
    """Mini-batch size."""
    optimizer: str = "adam"
    """'adam' or 'sgd' (momentum ``momentum``)."""
    schedule: str = "cosine"
    """'cosine': decay to 0 over all steps; 'step': multiply by ``gamma`` at each epoch in ``milestones``."""
    milestones: tuple[int, ...] = ()
    """Epochs (0-based count of finished epochs) at which the 'step' schedule multiplies the lr by ``gamma``."""
    gamma: float = 0.1
    """Factor of the 'step' schedule."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 0.0
    """L2 penalty of the optimizer."""

    def validate(self) -> Recipe:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"--epochs and --batch-size must be positive integers; got {self.epochs}, {self.batch_size}"
            )
        if self.lr <= 0:
            raise ConfigError(f"--lr must be a positive number; got {self.lr}")
        if self.optimizer not in OPTIMIZERS or self.schedule not in SCHEDULES:
            raise ConfigError(
                f"recipe optimizer must be one of {', '.join(OPTIMIZERS)} and schedule one of {', '.join(SCHEDULES)}"
            )
        return self


def _cosine(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """``0.5 (1 + cos(pi * step / total_steps))``."""
    return 0.5 * (1 + math.cos(math.pi * step / max(1, recipe.epochs * steps_per_epoch)))


def _step(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """``gamma ** (number of milestones <= finished epochs)``."""
    epoch = step // steps_per_epoch
    return recipe.gamma ** sum(epoch >= m for m in recipe.milestones)


SCHEDULES: dict[str, Callable[[Recipe, int, int], float]] = {"cosine": _cosine, "step": _step}

OPTIMIZERS: dict[str, Callable[[Iterable[torch.nn.Parameter], Recipe], torch.optim.Optimizer]] = {
    "adam": lambda params, r: torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay),
    "sgd": lambda params, r: torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay),
}


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The multiplier of ``recipe.lr`` for optimizer step ``step`` (0-based), given the steps in one epoch."""
    return SCHEDULES[recipe.schedule](recipe, step, steps_per_epoch)


_MNIST = Recipe(50, 0.01, 64, "sgd", "step", (30,), weight_decay=5e-4)
_CIFAR = Recipe(150, 1e-3, 128, "adam", "step", (80, 120), weight_decay=5e-4)
_CALTECH = Recipe(50, 0.01, 64, "sgd", "step", (), weight_decay=5e-4)
PAPER: dict[str, Recipe] = {
    "mnist": _MNIST,
    "fashion-mnist": _MNIST,
    "kmnist": _MNIST,
    "cifar10": _CIFAR,
    "cifar100": _CIFAR,
    "cifar100-coarse": _CIFAR,
    "svhn": _CIFAR,
    "caltech256": _CALTECH,
}


def _paper(data: str) -> Recipe:
    if data not in PAPER:
        raise ConfigError(
            f"--recipe paper has schedules for {', '.join(PAPER)} only (the paper's data sets), not {data}; "
            "use --recipe default with --epochs/--lr/--batch-size"
        )
    return PAPER[data]


RECIPES: dict[str, Callable[[str], Recipe]] = {"default": lambda data: Recipe(), "paper": _paper}


def list_recipes() -> list[str]:
    return sorted(RECIPES)


def resolve_recipe(
    recipe: str | Recipe,
    data: str,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
) -> Recipe:
    """Recipe ``recipe`` (a name in :data:`RECIPES` or a :class:`Recipe`) for data set ``data``, with the values
    given explicitly (not None) taking precedence."""
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ConfigError(f"--recipe must be one of {', '.join(list_recipes())}; got {recipe!r}")
        recipe = RECIPES[recipe](data)
    given = {k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size}.items() if v is not None}
    return replace(recipe, **given).validate()
