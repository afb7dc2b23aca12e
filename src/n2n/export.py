"""Export a saved model to ONNX or TorchScript, then check the exported file against the PyTorch model.

Both formats take one input named ``input`` of shape ``(batch, *input_shape)`` with a dynamic batch dimension and
return the logits; with a baked normalization the file takes pixels in [0, 1] and standardises them itself. The check
runs the exported file (onnxruntime for ONNX, ``torch.jit.load`` for TorchScript) and the PyTorch model on the same
inputs, at batch 1 and at a larger batch, and fails when the largest absolute difference of the logits exceeds a
tolerance.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n.data.normalize import Normalization
from n2n.errors import ConfigError, ModelError, N2NError
from n2n.files import atomic_write
from n2n.surgery.repair import Bypass

log = logging.getLogger(__name__)

OPSET = 17
CHECK_BATCHES = (1, 16)
Runner = Callable[[torch.Tensor], torch.Tensor]


def _require(*modules: str) -> None:
    """Import ``modules`` or raise a one-line error telling how to install them."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise N2NError(
                f"{name} is not installed: `pip install 'n2n[export]'` (or pip install onnx onnxruntime)"
            ) from None


_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_FIXED = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def fixed_pools(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of ``model`` whose adaptive average pools (``nn.AdaptiveAvgPool*d`` and the surgery's resampling
    :class:`~n2n.surgery.repair.Bypass`) are fixed-window average pools wherever their input size, at
    ``input_shape``, is a whole multiple of their output size: the same numbers, and an operator the ONNX exporter
    takes without knowing the input's size (it cannot export an adaptive pool whose input size it lost, as after
    a removed strided stem). ``model`` itself is unchanged (and returned as it is when it has no such pool).
    """
    seen: dict[str, set[tuple[tuple[int, ...], tuple[int, ...]]]] = {}

    def record(name: str, args: tuple, out: torch.Tensor) -> None:
        seen.setdefault(name, set()).add((tuple(args[0].shape[2:]), tuple(out.shape[2:])))

    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=name: record(name, args, out))
        for name, m in model.named_modules()
        if name and (isinstance(m, _ADAPTIVE) or (isinstance(m, Bypass) and m.out_size is not None))
    ]
    if not hooks:
        return model
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    fixed = copy.deepcopy(model)
    for name, sizes in seen.items():
        if len(sizes) != 1:  # one module at several places with different sizes: left adaptive
            continue
        ((size_in, size_out),) = sizes
        if len(size_in) != len(size_out) or any(o == 0 or i % o for i, o in zip(size_in, size_out, strict=True)):
            continue
        kernel = tuple(i // o for i, o in zip(size_in, size_out, strict=True))
        fixed.set_submodule(name, _FIXED[len(kernel)](kernel, kernel) if any(k > 1 for k in kernel) else nn.Identity())
    return fixed


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write ``model`` as ONNX (opset 17) with a dynamic batch dimension; returns the path.

    Uses the TorchScript-based exporter (``dynamo=False``): it traces the forward with an example input of batch 2,
    as the surgery's fx graphs and most classifiers trace without graph breaks. Adaptive average pools are written
    as the fixed-window pools they are at ``input_shape`` (:func:`fixed_pools`).
    """
    _require("onnx")
    path = Path(path)
    example = torch.zeros(2, *input_shape)
    with torch.no_grad():
        torch.onnx.export(
            fixed_pools(model, input_shape).eval(),
            (example,),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def onnx_session(path: str | Path, threads: int = 1) -> Any:
    """An onnxruntime inference session on the CPU with ``threads`` intra-op threads."""
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(path: Path) -> Runner:
    session = onnx_session(path)
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def export_torchscript(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Trace ``model`` with ``torch.jit.trace`` on a batch-2 example and save it; returns the path."""
    path = Path(path)
    example = torch.zeros(2, *input_shape)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), (example,), check_trace=False)
    except Exception as err:  # noqa: BLE001 - tracing fails with many exception types
        raise ModelError(f"the model does not trace with torch.jit.trace: {str(err).splitlines()[0]}") from None
    traced.save(str(path))
    return path


def _torchscript_runner(path: Path) -> Runner:
    loaded = torch.jit.load(str(path))
    return lambda x: loaded(x)


@dataclass(frozen=True)
class Exporter:
    """One export format: how to write the file and how to run it for the check."""

    suffix: str
    write: Callable[[nn.Module, tuple[int, ...], Path], Path]
    runner: Callable[[Path], Runner]


EXPORTERS: dict[str, Exporter] = {
    "onnx": Exporter(".onnx", export_onnx, _onnx_runner),
    "torchscript": Exporter(".pt", export_torchscript, _torchscript_runner),
}


@dataclass(frozen=True)
class ExportResult:
    """Where the file went and the largest absolute difference of the logits per checked batch size."""

    path: Path
    format: str
    max_abs_diff: dict[int, float]
    inputs: str  # where the check's inputs came from


class Normalized(nn.Module):
    """``model((x - mean) / std)``: an exported graph that takes pixels in [0, 1], for runtimes without n2n."""

    def __init__(self, model: nn.Module, norm: Normalization, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        shape = (1, -1) + (1,) * (len(input_shape) - 1)  # (1, C, 1, 1): one value per channel of (N, C, H, W)
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def check_inputs(
    input_shape: tuple[int, ...], data: torch.Tensor | None, n: int, seed: int = 0, pixels: bool = False
) -> torch.Tensor:
    """``n`` inputs for the check: the first ``n`` of ``data`` (real images) or seeded draws, normal or (``pixels``,
    for a file that takes pixels) uniform in [0, 1]."""
    if data is not None:
        if tuple(data.shape[1:]) != tuple(input_shape):
            raise ConfigError(f"the check data has inputs of shape {tuple(data.shape[1:])}, the model {input_shape}")
        return data[:n]
    draw = torch.rand if pixels else torch.randn
    return draw(n, *input_shape, generator=torch.Generator().manual_seed(seed))


def max_abs_diff(reference: nn.Module, runner: Runner, x: torch.Tensor) -> float:
    """``max |reference(x) - runner(x)|`` over all logits."""
    with torch.no_grad():
        expected = reference(x)
        got = runner(x)
    if got.shape != expected.shape:
        return float("inf")
    return (got - expected).abs().max().item()


def export_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    fmt: str,
    out: str | Path,
    data: torch.Tensor | None = None,
    atol: float = 1e-4,
    batches: tuple[int, ...] = CHECK_BATCHES,
    bake: Normalization | None = None,
) -> ExportResult:
    """Export ``model`` to ``out`` in format ``fmt`` and check it against the PyTorch model.

    Args:
        data: real inputs for the check (e.g. the test split: normalised, or pixels in [0, 1] with ``bake``); seeded
            draws when None.
        atol: largest allowed absolute difference of any logit.
        batches: batch sizes checked (batch 1 and a larger one test the dynamic batch dimension).
        bake: a normalization the file applies itself (:class:`Normalized`): it then takes pixels in [0, 1].

    Raises:
        ConfigError: unknown format or bad tolerance.
        N2NError: the exported model differs from the PyTorch one by more than ``atol`` (the file is removed).
    """
    if fmt not in EXPORTERS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORTERS)}; got {fmt!r}")
    if not atol > 0:
        raise ConfigError(f"--atol must be > 0; got {atol}")
    exporter = EXPORTERS[fmt]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = (model if bake is None else Normalized(model, bake, input_shape)).eval()
    with atomic_write(out) as tmp:  # the file appears only once it passed the check (and replaces a link there)
        diffs = _write_and_check(exporter, model, input_shape, tmp, data, batches, pixels=bake is not None)
        worst = max(diffs.values())
        if worst <= atol:
            log.info("exported %s: max abs diff %s", out, diffs)
            return ExportResult(out, fmt, diffs, "data" if data is not None else "random")
        raise N2NError(
            f"the {fmt} export differs from the PyTorch model by up to {worst:.3g} (batch sizes "
            f"{', '.join(f'{b}: {d:.3g}' for b, d in diffs.items())}) > --atol {atol:g}: the model's forward depends "
            "on something tracing fixes (input-dependent control flow or shapes); the file was not kept"
        )


def _write_and_check(
    exporter: Exporter,
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    data: torch.Tensor | None,
    batches: tuple[int, ...],
    pixels: bool = False,
) -> dict[int, float]:
    """Export to ``path`` and measure the largest logit difference per batch size against ``model``."""
    try:
        exporter.write(model, input_shape, path)
        runner = exporter.runner(path)
        x = check_inputs(input_shape, data, max(batches), pixels=pixels)
        return {b: max_abs_diff(model, runner, x[:b]) for b in batches}
    except N2NError:
        raise
    except Exception as err:  # noqa: BLE001 - exporters and runtimes raise many types; each is a model they cannot take
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ModelError(f"the export failed: {type(err).__name__}: {first[:300]}") from None
