"""Candidate evaluation: build a student from edits, distil it briefly, score it.

Everything a candidate needs is in :class:`EvalContext`, computed once per run (the teacher's logits above all).
Evaluators take a list of edits and return one :class:`CandidateResult` each, in order; the serial evaluator here is
the reference, and parallel ones must give the same results for the same seed.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch import nn

from n2n.errors import SurgeryError
from n2n.measure import LatencyModel, TimingSettings, latency_ms
from n2n.search.reward import INVALID_REWARD, objective_cost, reward
from n2n.surgery import Edits, apply_edits, count_macs, count_params, forward_counts
from n2n.train.compute import CPU, Compute, to_host
from n2n.train.evaluate import accuracy
from n2n.train.fit import Diverged, train_student
from n2n.train.losses import distill_loss

log = logging.getLogger(__name__)


class CandidateResult(NamedTuple):
    """What evaluating one student gave. ``reward`` is the unconstrained paper reward (or -1 when invalid)."""

    edits: Edits
    params: int
    macs: int
    val_accuracy: float
    reward: float
    reason: str  # why the student is invalid ("" when valid)
    seconds: float
    latency_ms: float = 0.0  # measured batch-1 latency (0 when the objective and constraints do not need it)
    eval_seconds: float = 0.0  # the part of ``seconds`` spent scoring on the validation split

    @property
    def valid(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class CandidateSettings:
    """How candidates are trained (a subset of the search config)."""

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    distill: str = "mse"
    temperature: float = 4.0
    reinit: bool = False
    max_linear_inputs: int = 50000
    eval_batch_size: int | None = None  # None: the device's (Compute.eval_batch_size)
    seed: int = 0
    max_step_scale: float = 1.0  # equal compute: smaller students train up to this many times ``steps``
    compute: Compute = CPU


@dataclass
class EvalContext:
    """Everything candidate evaluation reads, built once per run.

    Attributes:
        teacher: the trained teacher (never modified).
        protected: layers whose output size is fixed (classifier heads).
        x_train, z_train: the distillation subset and the teacher's logits on it (computed once).
        x_val, y_val: the validation split rewards are computed on.
        teacher_params, teacher_val_accuracy: the reward's normalisers.
        teacher_macs: the teacher's multiply-accumulates per example (the reference of the equal-compute budget).
        objective: what the reward's C measures (params, flops or latency; see ``reward.OBJECTIVES``).
        teacher_cost: the teacher's cost in that unit (None: ``teacher_params``).
        latency_timing: how candidate latency is measured; None when nothing needs it (it is then 0).
        teacher_latency_ms: the teacher's latency measured that way (0 when nothing needs it).
        latency_model: what predicts a student's latency without timing it, to narrow and fit candidates to a
            latency target (None without one; see `setup.fitted_latency_model`).
    """

    teacher: nn.Module
    input_shape: tuple[int, ...]
    protected: tuple[str, ...]
    x_train: torch.Tensor
    z_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    teacher_params: int
    teacher_val_accuracy: float
    settings: CandidateSettings
    teacher_macs: int = 0
    objective: str = "params"
    teacher_cost: float | None = None
    latency_timing: TimingSettings | None = None
    teacher_latency_ms: float = 0.0  # measured only when latency_timing is set
    latency_model: LatencyModel | None = None

    @property
    def example(self) -> torch.Tensor:
        return self.x_val[:2]


def candidate_seed(base: int, edits: Edits) -> int:
    """A seed that depends only on the run's seed and the architecture, so results do not depend on order."""
    return (base * 1_000_003 + zlib.crc32(edits.key().encode())) % 2**31


def candidate_steps(steps: int, teacher_macs: int, student_macs: int, max_scale: float) -> int:
    """Mini-batches a candidate trains for: ``round(steps * min(max_scale, max(1, M_teacher / M_student)))``.

    Equal compute per candidate: a student with k times fewer multiply-accumulates than the teacher costs about 1/k
    as much per step, so it trains k times as many steps, up to ``max_scale``. A fixed step count under-trains small
    students, and since their short-training accuracy is what the reward sees, it biases the search towards larger
    ones (the final fine-tune later recovers most of that accuracy, but the search never picked them).
    """
    if teacher_macs <= 0 or student_macs <= 0:
        return steps
    return round(steps * min(max_scale, max(1.0, teacher_macs / student_macs)))


def _reinitialise(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, "reset_parameters") and module is not model:
            module.reset_parameters()


def invalid_result(edits: Edits, reason: str, start: float, params: int = 0, macs: int = 0) -> CandidateResult:
    """An invalid candidate (R = -1) with its reason; ``start`` is when its evaluation began."""
    return CandidateResult(edits, params, macs, 0.0, INVALID_REWARD, reason, time.perf_counter() - start)


def _named(err: Exception) -> str:
    """An exception as an invalid candidate's reason: its type and the first line of its message."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def build_student(ctx: EvalContext, edits: Edits) -> nn.Module:
    """The untrained student ``edits`` describe (inheriting the teacher's weights unless ``reinit``)."""
    student = apply_edits(ctx.teacher, edits, ctx.example, ctx.protected)
    if ctx.settings.reinit:
        _reinitialise(student)
    return student


def _steps(ctx: EvalContext, student_macs: int) -> int:
    """The steps a student of ``student_macs`` trains for in this context (equal compute, :func:`candidate_steps`)."""
    s = ctx.settings
    return candidate_steps(s.steps, ctx.teacher_macs, student_macs, s.max_step_scale)


#: multiply-accumulates one activation element costs, for scheduling (:func:`evaluation_cost`): small students spend
#: most of their step in memory-bound layers, which MACs alone do not count (fitted on timed students; the fit is in
#: docs/benchmarks.md, "Compute-path choices").
ACTIVATION_MACS = 20


def evaluation_cost(ctx: EvalContext, edits: Edits) -> float:
    """A relative estimate of what evaluating ``edits`` costs, to hand the costliest candidates out first: the
    student's per-example cost (MACs plus :data:`ACTIVATION_MACS` per activation element) times the examples it
    trains on (forward and backward: 3x) and scores. Builds the student (tens of milliseconds); 0 when that fails
    (the evaluation then fails at once as well)."""
    try:
        macs, activations = forward_counts(build_student(ctx, edits), ctx.input_shape)
    except Exception:  # noqa: BLE001 - the evaluation reports the reason
        return 0.0
    examples = 3 * _steps(ctx, macs) * ctx.settings.batch_size + len(ctx.x_val)
    return examples * (macs + ACTIVATION_MACS * activations)


def costliest_first(ctx: EvalContext, batch: Sequence[Edits], workers: int) -> list[int]:
    """The order in which parallel ``workers`` should start ``batch`` (indices): the costliest first, so that those
    that finish early pick up the small ones and fewer wait idle at the end of an update (longest processing time
    first). Results do not depend on it. A batch no larger than ``workers`` keeps its order, and skips the estimate."""
    if len(batch) <= workers:
        return list(range(len(batch)))
    cost = [evaluation_cost(ctx, edits) for edits in batch]
    return sorted(range(len(batch)), key=lambda i: -cost[i])


def train_candidate(ctx: EvalContext, student: nn.Module, edits: Edits, macs: int) -> None:
    """Distil into ``student`` (of ``macs`` multiply-accumulates) in place as the search scores ``edits``: its
    equal-compute steps, the candidate settings, batches drawn with the architecture's seed."""
    s = ctx.settings
    train_student(
        student,
        ctx.x_train,
        ctx.z_train,
        steps=_steps(ctx, macs),
        batch_size=s.batch_size,
        lr=s.lr,
        weight_decay=s.weight_decay,
        generator=torch.Generator().manual_seed(candidate_seed(s.seed, edits)),
        loss_fn=distill_loss(s.distill, s.temperature),
        compute=s.compute,
    )


def evaluate_candidate(ctx: EvalContext, edits: Edits) -> CandidateResult:
    """Build, distil and score one student. Never raises: any failure is an invalid result with its reason."""
    start = time.perf_counter()
    s = ctx.settings
    try:
        torch.manual_seed(candidate_seed(s.seed, edits))
        student = build_student(ctx, edits)
        params = count_params(student)
        if params >= ctx.teacher_params:
            return invalid_result(edits, "not smaller than the teacher", start, params)
        wide = [(n, m.in_features) for n, m in student.named_modules() if isinstance(m, nn.Linear)]
        wide = [(n, f) for n, f in wide if f > s.max_linear_inputs]
        if wide:
            return invalid_result(
                edits, f"linear layer {wide[0][0]} takes {wide[0][1]} inputs (> {s.max_linear_inputs})", start, params
            )
        macs = count_macs(student, ctx.input_shape)
        train_candidate(ctx, student, edits, macs)
        scored = time.perf_counter()
        acc = accuracy(student, ctx.x_val, ctx.y_val, s.eval_batch_size, s.compute)
        eval_seconds = time.perf_counter() - scored
    except SurgeryError as err:
        return invalid_result(edits, f"surgery: {err}", start)
    except Diverged as err:
        return invalid_result(edits, f"training diverged: {err}", start)
    except Exception as err:  # failure isolation: a broken candidate costs its reward, never the search
        log.warning("candidate %s failed", edits.key(), exc_info=True)
        return invalid_result(edits, _named(err), start)
    latency = 0.0
    if ctx.latency_timing is not None:  # measured where and as the saved student runs, and the teacher was measured:
        student = to_host(student)  # on the CPU in NCHW, not where and as it trained (--channels-last)
        try:
            latency = latency_ms(student, ctx.input_shape, 1, ctx.latency_timing)
        except Exception as err:  # noqa: BLE001 - a student onnxruntime cannot run cannot meet its latency there
            return invalid_result(edits, f"{ctx.latency_timing.runtime} latency: {_named(err)}", start, params, macs)
    cost = objective_cost(ctx.objective, params, macs, latency)
    teacher_cost = ctx.teacher_params if ctx.teacher_cost is None else ctx.teacher_cost
    r = reward(acc, ctx.teacher_val_accuracy, cost, teacher_cost)
    return CandidateResult(edits, params, macs, acc, r, "", time.perf_counter() - start, latency, eval_seconds)


class Evaluator(Protocol):
    """Evaluates a batch of candidates; results come back in the order of ``batch``."""

    def evaluate(self, batch: Sequence[Edits]) -> list[CandidateResult]: ...

    def close(self) -> None: ...


class SerialEvaluator:
    """Evaluates candidates one after the other in this process, each with ``threads`` threads."""

    def __init__(self, ctx: EvalContext, threads: int | None = None) -> None:
        self.ctx, self.threads = ctx, threads

    def evaluate(self, batch: Sequence[Edits]) -> list[CandidateResult]:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return [evaluate_candidate(self.ctx, edits) for edits in batch]
        finally:
            torch.set_num_threads(before)

    def close(self) -> None:
        pass
