"""Training-time augmentation of normalised mini-batches: pure tensor functions, seeded by a ``torch.Generator``.

A data set declares its policy by name (``register_dataset(..., augment="crop_flip")``) and the trainer applies it
to each training mini-batch; validation and test data are never augmented. The policies follow the common CIFAR
recipe the paper used: random crops from the image padded by 4 pixels, and horizontal flips (not for digits).
Padding is zero on the *normalised* tensor, i.e. the training set's mean colour.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Policy = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

PADDING = 4


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int = PADDING) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) shifted by a random (dy, dx) in [-padding, padding]^2, zero-filled.

    Equivalent to zero-padding by ``padding`` on every side and cropping an H x W window at a uniformly random
    offset per image. The random offsets are drawn on the CPU, so ``generator`` is a CPU generator whatever the
    device of ``x``.
    """
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(x.device)
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # advanced indexing on dims 0, 2, 3 with the channel slice between them gives (N, H, W, C)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) mirrored left-right with probability 1/2."""
    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


_POLICIES: dict[str, Policy] = {
    "none": lambda x, generator: x,
    "crop": random_crop,
    "crop_flip": lambda x, generator: random_flip(random_crop(x, generator), generator),
}


def list_policies() -> list[str]:
    return sorted(_POLICIES)


def augment_batch(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """``x`` (N, C, H, W) augmented by ``policy`` ('none' returns ``x`` itself and draws no random numbers)."""
    return _POLICIES[policy](x, generator)
