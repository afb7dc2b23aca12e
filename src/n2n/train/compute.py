"""Where and how students compute: the device, mixed precision, memory format, and the divergence stop.

Every training and evaluation path takes a :class:`Compute` and moves models and batches with it, so the same code
runs on a CPU (CI), a CUDA GPU or Apple's MPS. Data stay on the host (they are shared with worker processes);
batches move to the device as they are used, through pinned memory on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from n2n.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
#: autocast dtype of each ``--precision`` (None: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: batch size of inference (teacher logits, scoring) per device type. On CPUs a batch whose activations fit in cache
#: wins (docs/benchmarks.md, "Compute-path choices"); GPUs want large batches.
EVAL_BATCH = {"cpu": 128}
DEFAULT_EVAL_BATCH = 1024
#: PyTorch's CPU allocator asks the kernel for transparent huge pages for its buffers of 2 MB or more when this
#: environment variable is "1" (fewer TLB misses in the convolution kernels; see :func:`enable_huge_pages`).
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
#: a loss this many times above its reference ...
DIVERGE_FACTOR = 10.0
#: ... for this many steps in a row means the student is diverging (it stops early with R = -1).
DIVERGE_PATIENCE = 5


def enable_huge_pages() -> None:
    """Have PyTorch back this process's large CPU buffers with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``),
    unless the variable is already set (``THP_MEM_ALLOC_ENABLE=0`` turns it off).

    PyTorch reads the variable once, at the process's first allocation of 2 MB or more, so the command line calls
    this first thing; worker processes inherit it, and Ray tasks get it in their runtime environment. Fewer TLB
    misses make candidate evaluation a little faster, with bit-identical results (docs/benchmarks.md, "Compute-path
    choices"). A library caller who wants it sets the variable before creating large tensors.
    """
    os.environ.setdefault(HUGE_PAGES_ENV, "1")


def _available(name: str) -> bool:
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        return torch.backends.mps.is_available()
    return name == "cpu"


def resolve_device(name: str) -> str:
    """The concrete device ``--device name`` stands for: auto is cuda, else mps, else cpu.

    Raises:
        ConfigError: ``name`` is unknown or its device is not available to this PyTorch build.
    """
    if name not in DEVICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICES)}; got {name!r}")
    if name == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if _available(d))
    if not _available(name):
        raise ConfigError(
            f"--device {name}: no {name.upper()} device is available to this PyTorch build "
            f"(torch {torch.__version__}); use --device cpu or --device auto"
        )
    return name


def resolve_precision(name: str, device: str) -> str:
    """The precision ``--precision name`` stands for on ``device``: auto is fp32 on CPU and MPS (bfloat16 autocast
    is slower on CPUs without AVX512-BF16/AMX), and bf16 on CUDA GPUs
    that support it, else fp16."""
    if name != "auto":
        return name
    if device != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@dataclass(frozen=True)
class Compute:
    """A concrete device, precision and memory format (resolved from the ``--device``/``--precision`` options).

    Attributes:
        device: "cpu", "cuda" or "mps".
        precision: "fp32", "bf16" or "fp16" (autocast mixed precision; weights stay float32).
        channels_last: 4-d activations and conv weights in NHWC layout.
    """

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    @property
    def eval_batch_size(self) -> int:
        """The inference batch size this device computes fastest with (see ``EVAL_BATCH``)."""
        return EVAL_BATCH.get(self.device, DEFAULT_EVAL_BATCH)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the forward pass (a no-op context in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """Loss scaling, needed by fp16 only (disabled scalers pass gradients through unchanged)."""
        return torch.amp.GradScaler(self.device, enabled=self.precision == "fp16")

    def model(self, model: nn.Module) -> nn.Module:
        """``model`` moved in place to this device and memory format."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def copy_of(self, model: nn.Module) -> nn.Module:
        """``model`` itself when it already lives on this device, else a moved copy: callers never move a model they
        do not own (the teacher is never modified)."""
        first = next(model.parameters(), None)
        if first is None or first.device.type == self.device:
            return model
        return self.model(copy.deepcopy(model))

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """One batch on this device (a host batch through pinned memory on CUDA; one already there as it is) in this
        memory format."""
        if x.device.type != self.device:
            x = x.pin_memory().to(self.device, non_blocking=True) if self.device == "cuda" else x.to(self.device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


#: plain float32 on the CPU: the default of every training and evaluation function.
CPU = Compute()


def to_host(model: nn.Module) -> nn.Module:
    """``model`` moved in place to the CPU in PyTorch's default NCHW layout, in eval mode: as it is saved, reported
    and timed, whatever device and memory format it trained in."""
    return model.to("cpu", memory_format=torch.contiguous_format).eval()


def divergence_limit(first_loss: float, null_loss: float, factor: float = DIVERGE_FACTOR) -> float:
    """The loss above which a step counts as diverging: ``factor * max(first_loss, null_loss)``.

    ``null_loss`` is the loss of an all-zero output on the first batch, so a student that starts almost exact (an
    inherited student whose first loss is near 0) is not stopped for ordinary noise.
    """
    return factor * max(first_loss, null_loss)


def divergence_streak(streak: int, loss: float, limit: float) -> int:
    """Steps in a row above ``limit`` after a step with ``loss`` (a NaN or infinite loss counts as above)."""
    return streak + 1 if not math.isfinite(loss) or loss > limit else 0


def first_divergence(losses: Sequence[float], limit: float, patience: int = DIVERGE_PATIENCE) -> int | None:
    """The step at which a loss sequence is stopped as diverging (``patience`` steps in a row above ``limit``),
    or None if it never is."""
    streak = 0
    for step, loss in enumerate(losses):
        streak = divergence_streak(streak, loss, limit)
        if streak >= patience:
            return step
    return None
