"""``compress``: a trained teacher in, a smaller student out (both stages, the fine-tune, the run directory)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from n2n._seed import seed_everything
from n2n.data import DataBundle
from n2n.errors import DataError, N2NError
from n2n.models.io import ModelSpec, save_model
from n2n.report import write_reports
from n2n.runlog import EventLog
from n2n.search.candidate import CandidateSettings, EvalContext, SerialEvaluator, build_student
from n2n.search.config import CompressConfig
from n2n.search.distill import accuracy, distill_loss, predict_logits, train_student
from n2n.search.loop import SearchContext, StageState, run_update
from n2n.search.policies import RemovalPolicy, ShrinkPolicy
from n2n.search.reinforce import EmaBaseline
from n2n.search.reward import Constraints
from n2n.surgery import Analysis, Edits, analyze, count_macs, count_params

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]


@dataclass
class CompressResult:
    """What ``compress`` returns: the fine-tuned student, its spec and the report (also written to ``out_dir``)."""

    student: nn.Module
    spec: ModelSpec
    report: dict[str, Any]
    out_dir: Path


def _context(teacher: nn.Module, analysis: Analysis, data: DataBundle, cfg: CompressConfig, z_train: torch.Tensor) -> EvalContext:
    n = min(cfg.candidate_examples, len(data.train))
    subset = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))[:n]
    return EvalContext(
        teacher=teacher,
        input_shape=data.input_shape,
        protected=tuple(analysis.protected()),
        x_train=data.train.x[subset],
        z_train=z_train[subset],
        x_val=data.val.x,
        y_val=data.val.y,
        teacher_params=analysis.params,
        teacher_val_accuracy=accuracy(teacher, data.val.x, data.val.y, cfg.eval_batch_size),
        settings=CandidateSettings(
            steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
            distill=cfg.distill, temperature=cfg.temperature, reinit=cfg.reinit,
            max_linear_inputs=cfg.max_linear_inputs, eval_batch_size=cfg.eval_batch_size, seed=cfg.seed,
        ),
    )


def _new_stage(name: str, cfg: CompressConfig, index: int) -> StageState:
    if name == "remove":
        policy: RemovalPolicy | ShrinkPolicy = RemovalPolicy(hidden=cfg.removal_hidden)
        lr = cfg.removal_lr
    else:
        policy = ShrinkPolicy(choices=cfg.fractions, hidden=cfg.shrink_hidden)
        lr = cfg.shrink_lr
    return StageState(
        name=name,
        policy=policy,
        optimizer=torch.optim.Adam(policy.parameters(), lr=lr),
        baseline=EmaBaseline(cfg.baseline_decay),
        generator=torch.Generator().manual_seed(cfg.seed * 1000 + index),
    )


def _save_policy(state: StageState, out_dir: Path) -> None:
    save_file({k: v.contiguous() for k, v in state.policy.state_dict().items()}, str(out_dir / f"policy_{state.name}.safetensors"))
    (out_dir / f"policy_{state.name}.json").write_text(json.dumps(state.policy.config(), indent=2) + "\n")


def compress(
    teacher: nn.Module,
    teacher_spec: ModelSpec,
    data: DataBundle,
    config: CompressConfig,
    out_dir: str | Path,
    listener: Listener | None = None,
) -> CompressResult:
    """Run the N2N search on ``teacher`` and write the run directory ``out_dir``.

    Stage 1 (remove) starts from the teacher; stage 2 (shrink) from the best stage-1 student. The teacher stays the
    distillation target and the compression base throughout. The best student is then fine-tuned with
    ``CE + kd_weight * distillation`` and measured on the test split.
    """
    cfg = config.validate()
    started = time.perf_counter()
    seed_everything(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "events.jsonl").unlink(missing_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    emit = EventLog(out / "events.jsonl", listener)
    seconds: dict[str, float] = {}
    try:
        teacher = teacher.eval()
        analysis = analyze(teacher, data.input_shape, fix=cfg.fix)
        if analysis.num_outputs != data.num_classes:
            raise DataError(
                f"the teacher has {analysis.num_outputs} outputs but {data.name} has {data.num_classes} classes: "
                "pass the data set the teacher was trained on"
            )
        t0 = time.perf_counter()
        z_train = predict_logits(teacher, data.train.x, cfg.eval_batch_size)
        seconds["teacher_logits"] = time.perf_counter() - t0
        ctx = _context(teacher, analysis, data, cfg, z_train)
        emit({"event": "start", "teacher_params": analysis.params, "teacher_val_accuracy": ctx.teacher_val_accuracy,
              "layers": len(analysis.layers), "stages": cfg.stage_list(), "updates": cfg.updates})
        search = SearchContext(
            analysis=analysis, base=Edits(), evaluator=SerialEvaluator(ctx), cache={},
            constraints=Constraints(cfg.max_params, cfg.min_accuracy, cfg.constraint_mode),
            fractions=tuple(cfg.fractions), entropy_coef=cfg.entropy_coef, seconds=seconds,
        )
        best = None
        for index, stage in enumerate(cfg.stage_list()):
            if search.base.removed:
                search.analysis = analyze(build_student(ctx, search.base), data.input_shape, cfg.fix, check_removals=False)
            state = _new_stage(stage, cfg, index)
            emit({"event": "stage", "stage": stage, "updates": cfg.updates, "layers": len(search.analysis.layers)})
            for _ in range(cfg.updates):
                run_update(state, search, cfg.rollouts, emit)
            _save_policy(state, out)
            if state.best is None:
                log.warning("stage %s found no valid student; the next stage starts from the previous best", stage)
                continue
            best, search.base = state.best, state.best.edits
        if best is None:
            raise N2NError(
                f"no candidate student was valid in {len(search.cache)} evaluations; the reasons are in "
                f"{out / 'events.jsonl'} (field 'reason')"
            )
        student, final = _finetune(ctx, data, cfg, search.base, z_train, emit, listener, seconds)
        spec = teacher_spec.with_edits(search.base, data=data.name, **final)
        save_model(student, spec, out / "student")
        report = write_reports(out, analysis, teacher, student, spec, data, ctx.teacher_val_accuracy,
                               len(search.cache), time.perf_counter() - started, seconds, best)
        emit({"event": "done", "wall_time_s": report["wall_time_s"]})
        return CompressResult(student, spec, report, out)
    finally:
        emit.close()


def _finetune(
    ctx: EvalContext, data: DataBundle, cfg: CompressConfig, edits: Edits, z_train: torch.Tensor,
    emit: Listener, listener: Listener | None, seconds: dict[str, float],
) -> tuple[nn.Module, dict[str, Any]]:
    """Train the chosen student on the full training split with ``CE + lambda * distillation``."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    student = build_student(ctx, edits)
    steps = cfg.finetune_epochs * math.ceil(len(data.train) / cfg.batch_size)
    emit({"event": "finetune", "steps": steps})
    if steps:
        train_student(
            student, data.train.x, z_train, steps=steps, batch_size=cfg.batch_size, lr=cfg.finetune_lr,
            weight_decay=0.0, generator=torch.Generator().manual_seed(cfg.seed), labels=data.train.y,
            loss_fn=distill_loss(cfg.distill, cfg.temperature), kd_weight=cfg.kd_weight,
            on_step=None if listener is None else lambda step: listener({"event": "finetune_step", "step": step + 1}),
        )
    student.eval()
    seconds["finetune"] = time.perf_counter() - t0
    return student, {
        "params": count_params(student),
        "macs": count_macs(student, data.input_shape),
        "val_accuracy": accuracy(student, data.val.x, data.val.y, cfg.eval_batch_size),
        "test_accuracy": accuracy(student, data.test.x, data.test.y, cfg.eval_batch_size),
    }
