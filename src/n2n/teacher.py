"""Training a teacher from the zoo with cross-entropy, by a recipe (see :mod:`n2n.recipes`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from n2n._seed import seed_everything
from n2n.data import DataBundle, augment_batch
from n2n.models.io import ModelSpec
from n2n.models.zoo import create_model
from n2n.recipes import OPTIMIZERS, Recipe, lr_factor, resolve_recipe
from n2n.train.compute import CPU, Compute, to_host
from n2n.train.evaluate import accuracy
from n2n.train.finetune import KeepBest
from n2n.train.fit import epoch_batches, fit

log = logging.getLogger(__name__)


def teacher_spec(arch: str, data: DataBundle, width: float = 1.0) -> ModelSpec:
    """The spec of zoo architecture ``arch`` sized for ``data``."""
    c, h, w = data.input_shape
    kwargs = {"in_channels": c, "num_classes": data.num_classes, "input_size": [h, w], "width": width}
    return ModelSpec(
        arch={"source": "zoo", "name": arch, "kwargs": kwargs},
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        normalization={"mean": list(data.mean), "std": list(data.std)},
        meta={"data": data.name, "data_options": dict(data.options)},
    )


def train_classifier(
    model: nn.Module,
    data: DataBundle,
    recipe: Recipe | None = None,
    *,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    compute: Compute = CPU,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy by ``recipe`` (default: :class:`Recipe`'s defaults); keeps the
    best epoch on validation. Training mini-batches are augmented by ``data.augment``; validation data is not.

    Training runs on ``compute``'s device and precision; the trained model is returned on the host.
    """
    recipe = (recipe or Recipe()).validate()
    seed_everything(seed)
    compute.model(model)
    gen = torch.Generator().manual_seed(seed)
    x, y = data.train.x, data.train.y
    steps_per_epoch = math.ceil(len(y) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    opt = OPTIMIZERS[recipe.optimizer](model.parameters(), recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(recipe, s, steps_per_epoch))
    best = KeepBest()

    def step_done(step: int) -> None:
        if on_step is not None:
            on_step(step + 1, total)
        if (step + 1) % steps_per_epoch == 0:
            acc = accuracy(model, data.val.x, data.val.y, compute=compute)
            log.info("epoch %d: validation accuracy %.4f", (step + 1) // steps_per_epoch, acc)
            best.offer(model, acc)

    order = epoch_batches(len(y), recipe.batch_size, recipe.epochs, gen)
    batches = ((augment_batch(x[i], data.augment, gen), y[i]) for i in order)  # augmented as each batch is drawn
    fit(model, batches, F.cross_entropy, opt, sched, compute=compute, on_step=step_done)
    best.restore(model)
    return to_host(model)


def train_teacher(
    arch: str,
    data: DataBundle,
    *,
    width: float = 1.0,
    recipe: str | Recipe = "default",
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    compute: Compute = CPU,
) -> tuple[nn.Module, ModelSpec]:
    """Build zoo architecture ``arch`` for ``data`` and train it; returns the model and its spec (with metrics).

    Args:
        recipe: a recipe name ('default', 'paper': see :mod:`n2n.recipes`) or a :class:`Recipe`.
        epochs, lr, batch_size: override the recipe's values when given.
    """
    recipe = resolve_recipe(recipe, data.name, epochs=epochs, lr=lr, batch_size=batch_size)
    seed_everything(seed)
    spec = teacher_spec(arch, data, width)
    model = create_model(arch, **spec.arch["kwargs"])
    train_classifier(model, data, recipe, seed=seed, on_step=on_step, compute=compute)
    spec.meta.update(
        val_accuracy=accuracy(model, data.val.x, data.val.y),
        test_accuracy=accuracy(model, data.test.x, data.test.y),
        epochs=recipe.epochs,
        recipe={**asdict(recipe), "milestones": list(recipe.milestones)},
        seed=seed,
        split_seed=data.split_seed,
    )
    return model, spec


def trained_split_seed(spec: ModelSpec, data: str) -> int | None:
    """The seed of the validation split that n2n held out when it trained ``spec``'s model on ``data``; None when
    n2n did not train it there (a network of your own, another data set).

    Another seed's validation split would hold examples the model was trained on, so its validation accuracy, and
    every reward a search normalises by it, would be overrated. Teachers record ``split_seed``; those saved before
    it was recorded were split with their training ``seed``, and students carry their run's ``split_seed``.
    """
    if spec.meta.get("data") != data:
        return None
    seed = spec.meta.get("split_seed", spec.meta.get("seed"))
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32 else None
