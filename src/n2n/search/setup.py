"""How a search run sets up from its settings: the candidates' training subset and what their evaluation reads,
where they are evaluated, the removal stage's nearer target or narrowing, and the teacher's logits for the fine-tune."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import torch
from torch import nn

from n2n.data import DataBundle
from n2n.measure import SEARCH_TIMING, LatencyModel, fit_latency_model, latency_ms
from n2n.search.candidate import CandidateSettings, EvalContext, Evaluator, SerialEvaluator, build_student
from n2n.search.narrow import Fitting, Narrowing, size_target
from n2n.search.parallel import ProcessPoolEvaluator, default_workers
from n2n.search.reward import Target, objective_cost
from n2n.settings import CompressConfig
from n2n.surgery import Analysis, Edits
from n2n.train.evaluate import accuracy, predict_logits

log = logging.getLogger(__name__)


def candidate_subset(n_train: int, cfg: CompressConfig) -> torch.Tensor:
    """Indices of the training examples candidates are distilled on: ``candidate_examples`` of the ``n_train``,
    drawn with the run's seed."""
    n = min(cfg.candidate_examples, n_train)
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))[:n]


def eval_context(
    teacher: nn.Module,
    analysis: Analysis,
    data: DataBundle,
    cfg: CompressConfig,
    z_train: torch.Tensor | None = None,
) -> EvalContext:
    """What candidate evaluation reads, as a search run builds it: the distillation subset (`candidate_subset`) with
    the teacher's logits on it, the validation split, the teacher's validation accuracy and cost, and the candidate
    settings of ``cfg``.

    Args:
        z_train: the teacher's logits on all of ``data.train``, when already computed; by default only the subset's
            are computed (the fine-tune computes the rest when it starts: `training_logits`).
    """
    timing = replace(SEARCH_TIMING, runtime=cfg.latency_runtime) if cfg.measures_latency else None
    latency = 0.0 if timing is None else latency_ms(teacher, data.input_shape, 1, timing)
    compute = cfg.compute()
    subset = candidate_subset(len(data.train), cfg)
    n = len(subset)
    x_train = data.train.x[subset]
    ctx = EvalContext(
        teacher=teacher,
        input_shape=data.input_shape,
        protected=tuple(analysis.protected()),
        x_train=x_train,
        z_train=predict_logits(teacher, x_train, cfg.eval_batch_size, compute) if z_train is None else z_train[subset],
        x_val=data.val.x,
        y_val=data.val.y,
        teacher_params=analysis.params,
        teacher_val_accuracy=accuracy(teacher, data.val.x, data.val.y, cfg.eval_batch_size, compute),
        settings=CandidateSettings(
            steps=cfg.steps if cfg.candidate_epochs is None else math.ceil(cfg.candidate_epochs * n / cfg.batch_size),
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            distill=cfg.distill,
            temperature=cfg.temperature,
            reinit=cfg.reinit,
            max_linear_inputs=cfg.max_linear_inputs,
            eval_batch_size=cfg.eval_batch_size,
            seed=cfg.seed,
            max_step_scale=cfg.max_step_scale,
            compute=compute,
        ),
        teacher_macs=analysis.macs,
        objective=cfg.objective,
        teacher_cost=objective_cost(cfg.objective, analysis.params, analysis.macs, latency),
        latency_timing=timing,
        teacher_latency_ms=latency,
    )
    if cfg.target_latency_ms is not None:  # timed: a latency target measures latency
        ctx.latency_model = fitted_latency_model(ctx, analysis, min(cfg.fractions))
    return ctx


def fitted_latency_model(ctx: EvalContext, analysis: Analysis, floor: float) -> LatencyModel | None:
    """The teacher's `LatencyModel`, fitted on the teacher and the teacher narrowed uniformly to ``floor``, both timed
    as candidates are (None when the teacher cannot be narrowed, or was not timed). On MNIST VGG students it predicts
    latency within about 20% (docs/benchmarks.md), where a latency proportional to MACs puts uniform pruning's 75K
    student (3% of the teacher's MACs) at 3% of the teacher's time instead of the 15% it takes."""
    if ctx.latency_timing is None or ctx.teacher_latency_ms <= 0:
        return None
    shrinkable = [layer.name for layer in analysis.layers if layer.shrinkable]
    try:
        narrow = build_student(ctx, Edits.make(keep={name: floor for name in shrinkable}))
    except Exception as err:  # noqa: BLE001 - a latency target is then converted to FLOPs (`size_target`)
        log.info("no latency model (the teacher cannot be narrowed to %s: %s)", floor, err)
        return None
    narrow_ms = latency_ms(narrow, ctx.input_shape, 1, ctx.latency_timing)
    model = fit_latency_model(ctx.teacher, narrow, ctx.input_shape, ctx.teacher_latency_ms, narrow_ms)
    log.info("latency model: %.4f ms per call + %.3g ms per MAC", model.ms_per_call, model.ms_per_mac)
    return model


def stage_targets(cfg: CompressConfig, teacher: Analysis, teacher_latency_ms: float) -> dict[str, Target]:
    """The removal stage's nearer target (``--removal-share`` of the way, in log scale) when a shrink stage follows
    it to reach the rest; no entry (the run's target) otherwise."""
    stages, target = cfg.stage_list(), cfg.target()
    if not target.set or stages != ["remove", "shrink"] or cfg.removal_share == 1 or narrows(cfg):
        return {}
    return {"remove": target.partway(cfg.removal_share, teacher.params, teacher.macs, teacher_latency_ms)}


def narrows(cfg: CompressConfig) -> bool:
    """Whether the removal stage scores its removals narrowed to the target (``--removal-scoring narrowed``)."""
    return cfg.removal_scoring == "narrowed" and cfg.target().set and cfg.stage_list() == ["remove", "shrink"]


def removal_narrowing(
    cfg: CompressConfig, ctx: EvalContext, analysis: Analysis, analyzed: Callable[[Edits], Analysis]
) -> Narrowing | None:
    """What turns a removal into the removal narrowed to the target, when the removal stage scores that way."""
    if not narrows(cfg):
        return None
    return _to_target(Narrowing, cfg, ctx, analysis, analyzed)


def shrink_fitting(
    cfg: CompressConfig, ctx: EvalContext, analysis: Analysis, analyzed: Callable[[Edits], Analysis]
) -> Fitting | None:
    """What scales a shrink candidate's widths to the target, when the shrink stage scores that way (with a target)."""
    if cfg.shrink_scoring != "fitted" or not cfg.target().set:
        return None
    return _to_target(Fitting, cfg, ctx, analysis, analyzed)


def _to_target(
    kind: type[Narrowing],
    cfg: CompressConfig,
    ctx: EvalContext,
    analysis: Analysis,
    analyzed: Callable[[Edits], Analysis],
) -> Narrowing:
    """A `Narrowing` or `Fitting` to the run's target (a latency target as ``ctx``'s model predicts it)."""
    target = size_target(cfg.target(), analysis.macs, ctx.teacher_latency_ms, ctx.latency_model)
    return kind(partial(build_student, ctx), analyzed, target, ctx.input_shape, min(cfg.fractions), ctx.latency_model)


def make_evaluator(ctx: EvalContext, cfg: CompressConfig) -> Evaluator:
    """Where candidates are evaluated: a Ray cluster (--ray-address), worker processes, or this process."""
    if cfg.ray_address is not None:
        from n2n.search.ray_eval import RayEvaluator  # imports ray: only when asked for

        return RayEvaluator(ctx, cfg.ray_address, cfg.candidate_threads)
    workers = cfg.workers or default_workers(cfg.candidate_threads)
    if workers == 1:
        return SerialEvaluator(ctx, cfg.candidate_threads)
    return ProcessPoolEvaluator(ctx, workers, cfg.candidate_threads)


def training_logits(ctx: EvalContext, data: DataBundle, cfg: CompressConfig) -> torch.Tensor:
    """The teacher's logits on all of ``data.train``: those of the candidate subset are ``ctx``'s, the others are
    computed now (only the fine-tune needs them, so a search does not wait for them)."""
    subset = candidate_subset(len(data.train), cfg)
    rest = torch.ones(len(data.train), dtype=torch.bool)
    rest[subset] = False
    z = torch.empty(len(data.train), ctx.z_train.shape[1], dtype=ctx.z_train.dtype)
    z[subset] = ctx.z_train
    if rest.any():
        z[rest] = predict_logits(ctx.teacher, data.train.x[rest], cfg.eval_batch_size, ctx.settings.compute)
    return z
