"""Baselines a learned search must beat, with the same data and final fine-tune as ``compress``.

- uniform: the same keep-fraction for every shrinkable layer (magnitude pruning through Torch-Pruning's dependency
  graph), the largest one whose student fits ``target_params``, then fine-tuned with CE + lambda * distillation.
- scratch: a found student's architecture, re-initialised randomly and trained with the same fine-tune, which
  separates what the search found (the architecture) from what the student inherited (the teacher's weights).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n.compress import Listener, finetune_student
from n2n.data import DataBundle
from n2n.errors import ConfigError, N2NError, SurgeryError
from n2n.events import Baseline, Done
from n2n.files import RunLock, own_dir, write_json
from n2n.models.io import ModelSpec, read_spec, save_model
from n2n.preprocess import match_teacher
from n2n.report import write_reports
from n2n.runlog import EventLog
from n2n.search.candidate import CandidateResult
from n2n.search.reward import reward
from n2n.search.setup import eval_context
from n2n.settings import CompressConfig
from n2n.settings_file import read_config
from n2n.surgery import Analysis, Edits, analyze, apply_edits, count_params


def uniform_edits(teacher: nn.Module, analysis: Analysis, target_params: int, bisections: int = 20) -> Edits:
    """The largest uniform keep-fraction whose student has at most ``target_params`` parameters (bisection)."""
    names = [layer.name for layer in analysis.layers if layer.shrinkable]
    if not names:
        raise ConfigError("the teacher has no shrinkable layer; a uniform baseline cannot make it smaller")
    example = torch.zeros(2, *analysis.input_shape)
    lo, hi, best = 0.0, 1.0, None
    for _ in range(bisections):
        mid = (lo + hi) / 2
        edits = Edits.make(keep={name: mid for name in names})
        try:
            params = count_params(apply_edits(teacher, edits, example, analysis.protected()))
        except SurgeryError:
            hi = mid
            continue
        if params <= target_params:
            best, lo = edits, mid
        else:
            hi = mid
    if best is None:
        raise ConfigError(f"no uniform keep-fraction brings the teacher to {target_params:,} parameters or fewer")
    return best


def run_baseline(
    kind: str,
    teacher: nn.Module,
    spec: ModelSpec,
    data: DataBundle,
    config: CompressConfig,
    out_dir: str | Path,
    edits: Edits,
    listener: Listener | None = None,
) -> dict[str, Any]:
    """Fine-tune the student ``edits`` describe (re-initialised when ``config.reinit``) and write its reports.

    ``data`` is normalised as ``spec`` records (a spec that records nothing gets ``data``'s normalization recorded).
    """
    started = time.perf_counter()
    cfg = config.validate()
    spec, data = match_teacher(spec, data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        write_json(out / "config.json", {**cfg.to_dict(), "baseline": kind})
        (out / "events.jsonl").unlink(missing_ok=True)
        return _run_baseline(kind, teacher, spec, data, cfg, out, edits, listener, started)


def _run_baseline(
    kind: str,
    teacher: nn.Module,
    spec: ModelSpec,
    data: DataBundle,
    cfg: CompressConfig,
    out: Path,
    edits: Edits,
    listener: Listener | None,
    started: float,
) -> dict[str, Any]:
    emit = EventLog(out / "events.jsonl", listener)
    try:
        teacher = teacher.eval()
        analysis = analyze(teacher, data.input_shape, fix=cfg.fix, check_removals=False)
        ctx = eval_context(teacher, analysis, data, cfg)
        emit(Baseline(kind, edits.to_dict()))
        seconds: dict[str, float] = {}
        student, final = finetune_student(ctx, data, cfg, edits, emit, listener, seconds)
        student_spec = spec.with_edits(edits, data=data.name, split_seed=data.split_seed, baseline=kind, **final)
        save_model(student, student_spec, own_dir(out / "student"))
        r = reward(final["val_accuracy"], ctx.teacher_val_accuracy, final["params"], analysis.params)
        best = CandidateResult(edits, final["params"], final["macs"], final["val_accuracy"], r, "", 0.0)
        report = write_reports(
            out,
            analysis,
            teacher,
            student,
            student_spec,
            data,
            ctx.teacher_val_accuracy,
            0,
            time.perf_counter() - started,
            seconds,
            best,
        )
        emit(Done(report["wall_time_s"]))
        return report
    finally:
        emit.close()


def scratch_config(run_dir: Path) -> tuple[CompressConfig, Edits]:
    """The settings and student edits of a finished run, with re-initialisation switched on."""
    if not (run_dir / "config.json").is_file() or not (run_dir / "student" / "spec.json").is_file():
        raise N2NError(f"{run_dir} is not a finished n2n run (config.json and student/ are needed)")
    return replace(read_config(run_dir / "config.json"), reinit=True), read_spec(run_dir / "student").edits
