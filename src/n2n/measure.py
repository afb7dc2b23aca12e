"""What a model costs to ship and run: parameters, MACs, file size and latency measured on this machine.

Latency is the median wall time of repeated forward passes after a warm-up, for PyTorch eager and (when installed)
onnxruntime; during a search, where other workers train beside the measurement, it is the fastest pass. Every
measurement stops after ``budget_s`` seconds of repeats (with at least ``min_repeats``), so reports stay quick;
medians of few repeats are noisy, which is why reports give teacher and student measured side by side.
"""

from __future__ import annotations

import importlib.util
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save

from n2n.surgery import count_calls, count_macs, count_params

log = logging.getLogger(__name__)

BATCHES = (1, 64)

#: where a latency can be measured: PyTorch eager, or onnxruntime on the student's ONNX export (``n2n[export]``)
RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class TimingSettings:
    """How latency is measured: ``warmup`` untimed calls, then repeats until ``budget_s`` (at least ``min_repeats``,
    at most ``max_repeats``); ``statistic`` of the calls is reported: their median, or the fastest (``min``)."""

    warmup: int = 3
    min_repeats: int = 5
    max_repeats: int = 100
    budget_s: float = 1.0
    threads: int = 1
    statistic: Literal["median", "min"] = "median"
    runtime: Literal["torch", "onnxruntime"] = "torch"  # what `latency_ms` times: PyTorch eager or the ONNX export

    def __post_init__(self) -> None:
        if self.statistic not in ("median", "min"):
            raise ValueError(f"TimingSettings.statistic must be 'median' or 'min'; got {self.statistic!r}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"TimingSettings.runtime must be one of {', '.join(RUNTIMES)}; got {self.runtime!r}")


#: Latency during a search (``--objective latency``, ``--max-latency-ms``): short, as every candidate is measured, and
#: the fastest call of 0.3 s of them, which the other workers' training hardly moves: measured beside a training
#: process, repeated measurements of a 75K student spread by 1.1x (max/min) this way and by 1.8-2x as the median of
#: at most 50 calls (benchmarks/search_timing.py), and agree with an idle machine's median.
SEARCH_TIMING = TimingSettings(warmup=2, min_repeats=5, max_repeats=100_000, budget_s=0.3, statistic="min")


#: Latency in reports and ``n2n evaluate``: at most about half a second per runtime and batch size.
REPORT_TIMING = TimingSettings(warmup=3, min_repeats=5, max_repeats=50, budget_s=0.5)


#: which quantile of the measured/predicted ratios a calibrated `LatencyModel` scales by: an upper one, so that more
#: students fitted to a latency target meet it as measured (49-62% of the width choices of two 75K MNIST runs, against
#: 12-35% with the median over all candidates; docs/benchmarks.md, "A latency target met as a fitted model predicts it")
CALIBRATION_QUANTILE = 0.75

#: how many measured students of one depth (one count of calls) calibrate that depth apart from the others
SAME_DEPTH = 3


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values``, interpolated linearly between the order statistics."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


@dataclass
class LatencyModel:
    """Batch-1 latency predicted from what is counted without timing: ``ms_per_call`` per leaf-module call plus
    ``ms_per_mac`` per multiply-accumulate, times a ratio of measured to predicted latency learned from the
    students given to `observe` so far (1 before any). A small network's eager latency is mostly a fixed cost per
    call, so at equal MACs a shallower student is faster, which a latency taken as proportional to MACs misses. A
    search with a latency target narrows and fits its candidates with it (`fit_latency_model`) and tells it what
    each candidate measured: the teacher is timed alone, candidates where they are evaluated, beside other workers'
    training (13% slower on two cores, docs/benchmarks.md). Their reward reads measured latency. In onnxruntime
    (``--latency-runtime``) the same two costs are fitted on onnxruntime's timings, where a call costs about 20x less.

    The ratio is the upper quartile (`CALIBRATION_QUANTILE`) of those measured at the same depth (the same number of
    calls) once `SAME_DEPTH` have been, else of all: how far the two costs miss depends on which layers are left, and
    the shrink stage measures one depth only, which the removal stage's many depths would otherwise outvote."""

    ms_per_call: float
    ms_per_mac: float
    ratios: dict[int, list[float]] = field(default_factory=dict, repr=False)  # by number of calls

    def scale(self, calls: int | None = None) -> float:
        """The ratio predictions are multiplied by, for a student of ``calls`` calls (any depth when None)."""
        same = self.ratios.get(calls, []) if calls is not None else []
        pool = same if len(same) >= SAME_DEPTH else [r for ratios in self.ratios.values() for r in ratios]
        return _quantile(pool, CALIBRATION_QUANTILE) if pool else 1.0

    def counts(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> tuple[int, float]:
        """The student's number of calls, and its latency predicted from the counts alone (no scale)."""
        calls = count_calls(model, input_shape)
        return calls, self.ms_per_call * calls + self.ms_per_mac * count_macs(model, input_shape)

    def __call__(self, model: torch.nn.Module, input_shape: tuple[int, ...]) -> float:
        calls, counted = self.counts(model, input_shape)
        return self.scale(calls) * counted

    def observe(self, model: torch.nn.Module, input_shape: tuple[int, ...], measured_ms: float) -> None:
        """Scale later predictions by what ``model`` measured against what the counts predict for it."""
        calls, predicted = self.counts(model, input_shape)
        if predicted > 0 and measured_ms > 0:
            self.ratios.setdefault(calls, []).append(measured_ms / predicted)


def fit_latency_model(
    wide: torch.nn.Module, narrow: torch.nn.Module, input_shape: tuple[int, ...], wide_ms: float, narrow_ms: float
) -> LatencyModel:
    """The `LatencyModel` through two measured networks of one depth, ``wide`` and the same layers ``narrow``er (the
    teacher and the teacher narrowed uniformly): their difference in time is their difference in MACs, and what the
    wide one's time does not spend on MACs is shared among its calls. Neither coefficient goes below 0."""
    wide_macs, narrow_macs = count_macs(wide, input_shape), count_macs(narrow, input_shape)
    per_mac = max(0.0, (wide_ms - narrow_ms) / (wide_macs - narrow_macs)) if wide_macs > narrow_macs else 0.0
    per_call = max(0.0, wide_ms - per_mac * wide_macs) / max(1, count_calls(wide, input_shape))
    return LatencyModel(ms_per_call=per_call, ms_per_mac=per_mac)


def timed_seconds(fn: Callable[[], Any], timing: TimingSettings = TimingSettings()) -> float:
    """Wall time of ``fn()`` in seconds (``timing.statistic`` of the repeats), after ``timing.warmup`` untimed calls."""
    for _ in range(timing.warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < timing.max_repeats and (
        len(times) < timing.min_repeats or time.perf_counter() - start < timing.budget_s
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if timing.statistic == "min" else statistics.median(times)


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Size in bytes of the model's state dict serialised as safetensors (what ``model.safetensors`` takes)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return len(save(tensors))


def torch_latency_ms(
    model: torch.nn.Module, input_shape: tuple[int, ...], batch: int, timing: TimingSettings = TimingSettings()
) -> float:
    """Median latency in milliseconds of one eager forward pass on a ``(batch, *input_shape)`` input."""
    model = model.eval()
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
    before = torch.get_num_threads()
    torch.set_num_threads(timing.threads)
    try:
        with torch.inference_mode():
            return 1000.0 * timed_seconds(lambda: model(x), timing)
    finally:
        torch.set_num_threads(before)


def onnxruntime_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def onnx_latencies_ms(
    model: torch.nn.Module, input_shape: tuple[int, ...], batches: tuple[int, ...], timing: TimingSettings
) -> dict[int, float]:
    """Median onnxruntime latency in milliseconds per batch size (the model exported once, dynamic batch)."""
    import numpy as np

    from n2n.export import export_onnx, onnx_session

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: `n2n export` reports them, with its numerical check
        path = export_onnx(model, input_shape, Path(tmp) / "model.onnx")
        session = onnx_session(path, threads=timing.threads)
        result = {}
        for batch in batches:
            x = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)
            result[batch] = 1000.0 * timed_seconds(lambda x=x: session.run(None, {"input": x}), timing)
        return result


def latency_ms(
    model: torch.nn.Module, input_shape: tuple[int, ...], batch: int, timing: TimingSettings = TimingSettings()
) -> float:
    """Latency in milliseconds of one forward pass on a ``(batch, *input_shape)`` input in ``timing.runtime``.

    With onnxruntime the model is exported to ONNX first (as `n2n export` writes it), which raises when it cannot be
    (or when onnx is not installed).
    """
    if timing.runtime == "onnxruntime":
        return onnx_latencies_ms(model, input_shape, (batch,), timing)[batch]
    return torch_latency_ms(model, input_shape, batch, timing)


def measure_cost(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    latency: bool = True,
    timing: TimingSettings = TimingSettings(),
    batches: tuple[int, ...] = BATCHES,
) -> dict[str, Any]:
    """Parameters, MACs, FLOPs, file size and (when ``latency``) measured latency of ``model``.

    Returns:
        ``{"params", "macs", "flops", "file_bytes", "latency_ms": {"torch": {"1": ms, "64": ms}, "onnxruntime":
        {...}}}``; ``latency_ms`` is ``{}`` when not measured, and has no ``onnxruntime`` entry when onnxruntime is
        not installed or the export failed (logged).
    """
    macs = count_macs(model, input_shape)
    cost: dict[str, Any] = {
        "params": count_params(model),
        "macs": macs,
        "flops": 2 * macs,
        "file_bytes": state_dict_bytes(model),
        "latency_ms": {},
    }
    if not latency:
        return cost
    cost["latency_ms"]["torch"] = {str(b): torch_latency_ms(model, input_shape, b, timing) for b in batches}
    if onnxruntime_available():
        try:
            ort = onnx_latencies_ms(model, input_shape, batches, timing)
            cost["latency_ms"]["onnxruntime"] = {str(b): ms for b, ms in ort.items()}
        except Exception as err:  # noqa: BLE001 - a model ONNX cannot express still gets its PyTorch figures
            log.warning("onnxruntime latency not measured: %s", err)
    return cost


def speedups(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, Any]:
    """Teacher/student ratios of every cost the two have in common (``> 1``: the student is cheaper or faster)."""
    ratios: dict[str, Any] = {
        key: teacher[key] / student[key] for key in ("params", "macs", "file_bytes") if student.get(key)
    }
    latency = {}
    for runtime, per_batch in student.get("latency_ms", {}).items():
        theirs = teacher.get("latency_ms", {}).get(runtime, {})
        common = {b: theirs[b] / ms for b, ms in per_batch.items() if b in theirs and ms > 0}
        if common:
            latency[runtime] = common
    ratios["latency"] = latency
    return ratios


def compare_costs(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    input_shape: tuple[int, ...],
    latency: bool = True,
    timing: TimingSettings = TimingSettings(),
) -> dict[str, Any]:
    """``{"teacher": cost, "student": cost, "speedup": ratios}``, both measured in the same call."""
    t = measure_cost(teacher, input_shape, latency, timing)
    s = measure_cost(student, input_shape, latency, timing)
    return {"teacher": t, "student": s, "speedup": speedups(t, s)}
