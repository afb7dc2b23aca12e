"""``compress``: a trained teacher in, a smaller student out (both stages, the fine-tune, the run directory)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n._seed import seed_everything
from n2n.data import DataBundle
from n2n.errors import ConfigError, DataError, Interrupted, N2NError
from n2n.events import Done, Finetune, FinetuneStep, Front, Start
from n2n.files import RunLock, own_dir, read_json_object, write_json
from n2n.measure import REPORT_TIMING, LatencyModel, measure_cost
from n2n.models.io import ModelSpec, save_model
from n2n.preprocess import match_teacher
from n2n.report import teacher_floor, weak_teacher_below, write_reports
from n2n.runlog import EventLog, truncate_events
from n2n.search.candidate import (
    CandidateResult,
    EvalContext,
    build_student,
)
from n2n.search.checkpoint import (
    CHECKPOINT,
    Checkpoint,
    read_checkpoint,
)
from n2n.search.front import accuracy_front, pick_front, top_students
from n2n.search.loop import EventSink, run_stages
from n2n.search.narrow import size_target, widen_to_target
from n2n.search.reward import INVALID_REWARD
from n2n.search.setup import (
    eval_context,
    make_evaluator,
    removal_narrowing,
    shrink_fitting,
    stage_targets,
    training_logits,
)
from n2n.search.state import SearchContext, SearchState
from n2n.settings import CompressConfig
from n2n.surgery import Analysis, Edits, analyze, count_macs, count_params, unmatched_patterns
from n2n.teacher import trained_split_seed
from n2n.train.evaluate import accuracy, predict_logits
from n2n.train.finetune import FinetuneSettings, finetune

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]


@dataclass
class CompressResult:
    """What ``compress`` returns: the fine-tuned student, its spec and the report (also written to ``out_dir``)."""

    student: nn.Module
    spec: ModelSpec
    report: dict[str, Any]
    out_dir: Path


_PLACEMENT = ("workers", "ray_address", "tensorboard")  # where candidates run and logs go: results do not depend on it


def _open_run(out: Path, cfg: CompressConfig, resume: bool, overwrite: bool = False) -> Checkpoint | None:
    """Check ``out`` against ``resume``; the checkpoint to continue from, or None for a new run."""
    path = out / CHECKPOINT
    if not resume:
        if path.exists() and not overwrite:
            raise N2NError(
                f"{out} holds an unfinished search: continue it with `n2n compress --resume {out}`, "
                "choose another --out, or pass --overwrite to start again"
            )
        if ((out / "report.json").exists() or (out / "student").exists()) and not overwrite:
            raise N2NError(f"{out} holds a finished run: choose another --out, or pass --overwrite to replace it")
        for stale in (path, out / "report.json", out / "report.md"):  # a replaced run must not look finished
            stale.unlink(missing_ok=True)
        return None
    if not path.exists():
        done = (out / "report.json").exists()
        raise N2NError(
            f"{out} has no search to resume"
            + (
                ": it has finished (see report.md)"
                if done
                else " (no checkpoint.safetensors): start it with `n2n compress --out ...`"
            )
        )
    saved = read_json_object(out / "config.json", "settings file", ConfigError)
    current = json.loads(json.dumps(cfg.to_dict()))
    # a setting missing from an older config.json has its default in both (it did not exist when the run started)
    changed = sorted(
        k for k in set(saved) | set(current) if saved.get(k, current.get(k)) != current.get(k) and k not in _PLACEMENT
    )
    if changed:
        raise ConfigError(
            f"a resumed search must keep its settings, but {', '.join('--' + k.replace('_', '-') for k in changed)} "
            f"differ from {out / 'config.json'}"
        )
    return read_checkpoint(path)


def compress(
    teacher: nn.Module,
    teacher_spec: ModelSpec,
    data: DataBundle,
    config: CompressConfig,
    out_dir: str | Path,
    listener: Listener | None = None,
    resume: bool = False,
    overwrite: bool = False,
    record: dict[str, Any] | None = None,
) -> CompressResult:
    """Run the N2N search on ``teacher`` and write the run directory ``out_dir``.

    Stage 1 (remove) starts from the teacher; stage 2 (shrink) from the best stage-1 student. The teacher stays the
    distillation target and the compression base throughout. The best student is then fine-tuned with
    ``CE + kd_weight * distillation`` and measured on the test split.

    The search state is checkpointed after every policy update; ``resume=True`` continues an interrupted run in
    ``out_dir`` (same teacher, data and settings) and gives the same events and student as an uninterrupted run.
    A run directory is locked while its search runs; an existing run in it is replaced only when ``overwrite``.
    ``record`` (the teacher and data as given, the command) is written to ``run.json`` of a new run. ``data`` is
    normalised as ``teacher_spec`` records (a spec that records nothing gets ``data``'s normalization recorded).

    Raises:
        N2NError: ``out_dir`` is in use or holds another run; the teacher is at chance accuracy; no student was
            valid, or none met the constraints (no student that breaks one is ever saved).
    """
    cfg = config.validate()
    teacher_spec, data = match_teacher(teacher_spec, data)
    split = trained_split_seed(teacher_spec, data.name)
    if split is not None and split != data.split_seed:
        log.warning(
            "the teacher was trained beside the validation split of seed %d, but this data was split with seed %d: "
            "part of its validation split is teacher training data, which overrates the teacher and the rewards "
            "normalised by it; load the data with seed=%d",
            split,
            data.split_seed,
            split,
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        ckpt = _open_run(out, cfg, resume, overwrite)
        if record is not None and ckpt is None:
            write_json(out / "run.json", {**record, "split_seed": data.split_seed})
        return _compress(teacher, teacher_spec, data, cfg, out, listener, ckpt)


def _compress(
    teacher: nn.Module,
    teacher_spec: ModelSpec,
    data: DataBundle,
    cfg: CompressConfig,
    out: Path,
    listener: Listener | None,
    ckpt: Checkpoint | None,
) -> CompressResult:
    started = time.perf_counter() - (ckpt.meta["elapsed"] if ckpt else 0.0)
    seed_everything(cfg.seed)
    if ckpt is None:
        (out / "events.jsonl").unlink(missing_ok=True)
        write_json(out / "config.json", cfg.to_dict())
    else:
        truncate_events(out / "events.jsonl", ckpt.meta["events"])
    board = None
    if cfg.tensorboard is not None:
        from n2n.reporting.tensorboard import TensorBoardListener

        board = TensorBoardListener(cfg.tensorboard, cfg.updates, cfg.rollouts)
    emit = EventLog(out / "events.jsonl", _both(listener, board))
    seconds: dict[str, float] = dict(ckpt.meta["seconds"]) if ckpt else {}
    search: SearchContext | None = None
    try:
        teacher = teacher.eval()
        analysis = analyze(teacher, data.input_shape, fix=cfg.fix)
        if analysis.num_outputs != data.num_classes:
            raise DataError(
                f"the teacher has {analysis.num_outputs} outputs but {data.name} has {data.num_classes} classes: "
                "pass the data set the teacher was trained on"
            )
        unmatched = unmatched_patterns(analysis, cfg.fix)
        if unmatched:
            raise ConfigError(
                f"--fix {unmatched[0]!r} matches none of the teacher's layers (see `n2n inspect`): "
                f"{', '.join(layer.name for layer in analysis.layers[:6])}, ..."
            )
        if ckpt is None:
            save_model(teacher, teacher_spec, own_dir(out / "teacher"))
        t0 = time.perf_counter()  # the teacher's logits on the candidate subset, its validation accuracy
        ctx = eval_context(teacher, analysis, data, cfg)
        seconds["teacher_logits"] = seconds.get("teacher_logits", 0.0) + time.perf_counter() - t0
        check_teacher(ctx.teacher_val_accuracy, data)

        def analyzed(edits: Edits) -> Analysis:  # the layers of the student ``edits`` make, for the next stage
            return analyze(build_student(ctx, edits), data.input_shape, cfg.fix, check_removals=False)

        search = SearchContext(
            analysis=analysis,
            base=Edits(),
            evaluator=make_evaluator(ctx, cfg),
            cache={},
            constraints=cfg.constraints(),
            fractions=tuple(cfg.fractions),
            entropy_coef=cfg.entropy_coef,
            max_draws=cfg.max_draws,
            seconds=seconds,
            target=cfg.target(),
            teacher_accuracy=ctx.teacher_val_accuracy,
            stage_targets=stage_targets(cfg, analysis, ctx.teacher_latency_ms),
            narrow=removal_narrowing(cfg, ctx, analysis, analyzed),
            fit=shrink_fitting(cfg, ctx, analysis, analyzed),
        )
        state = SearchState(index=0, stage=None, ctx=search)
        if ckpt is None:
            emit(
                Start(
                    teacher_params=analysis.params,
                    teacher_val_accuracy=ctx.teacher_val_accuracy,
                    weak_teacher=ctx.teacher_val_accuracy < weak_teacher_below(data.num_classes),
                    objective=cfg.objective,
                    teacher_cost=ctx.teacher_cost,
                    layers=len(analysis.layers),
                    stages=cfg.stage_list(),
                    updates=cfg.updates,
                    latency_model=_counted_model(ctx.latency_model),
                )
            )
        else:
            with _damaged(out):
                state.restore(ckpt, cfg.stage_list())
            scaler = search.narrow or search.fit  # a latency target's model learns again what candidates measured
            if scaler is not None:
                scaler.observe(list(search.cache.values()))
            log.info("resuming %s at stage %s, update %d", out, ckpt.meta["stage"], ckpt.meta["update"])

        def save(st: SearchState) -> None:
            st.save(out / CHECKPOINT, emit.count, time.perf_counter() - started)

        def restore(st: SearchState) -> None:
            with _damaged(out):
                st.restore_stage(ckpt)

        best = run_stages(state, cfg, emit, analyzed, save, out, None if ckpt is None else restore)
        finalists, widened = ([] if best is None else [best]), None
        if search.target.set:  # the most accurate students that meet the targets, from either stage, best first
            finalists = top_students(search.cache.values(), lambda r: _meets(search, r), search.reward, cfg.finalists)
            best = finalists[0] if finalists else None
            grown = _widened(search, ctx, best) if cfg.widen and best is not None else None
            if grown is not None and all(grown.edits.key() != r.edits.key() for r in finalists):
                finalists.append(grown)
                widened = grown.edits.key()
        if best is None:
            raise N2NError(_no_student(search, cfg, out))
        t0 = time.perf_counter()
        online = student_finetune(cfg, data).online  # the teacher's logits per batch: none needed up front
        z_train = None if online else training_logits(ctx, data, cfg)  # once, for the chosen student and the front's
        seconds["finetune"] = seconds.get("finetune", 0.0) + time.perf_counter() - t0
        tuned: dict[str, tuple[CandidateResult, nn.Module, dict[str, Any]]] = {}

        def tune(r: CandidateResult) -> tuple[CandidateResult, nn.Module, dict[str, Any]]:  # each student once
            if r.edits.key() not in tuned:
                tuned[r.edits.key()] = (r, *finetune_student(ctx, data, cfg, r.edits, emit, listener, seconds, z_train))
            return tuned[r.edits.key()]

        # under a target only accuracy counts: the finalists' fine-tuned validation accuracy decides
        best, student, final = max(
            (tune(r) for r in finalists), key=lambda t: finalist_rank(t[2], finalists.index(t[0]))
        )
        spec = teacher_spec.with_edits(best.edits, data=data.name, split_seed=data.split_seed, **final)
        save_model(student, spec, own_dir(out / "student"))
        others = pick_front(accuracy_front(search.cache.values(), lambda r: _meets(search, r)), best, cfg.front)
        front = _save_front(ctx, data, cfg, teacher_spec, [tune(best), *(tune(r) for r in others)], out)
        emit(Front([{k: v for k, v in row.items() if k != "latency_ms"} for row in front]))
        report = write_reports(
            out,
            analysis,
            teacher,
            student,
            spec,
            data,
            ctx.teacher_val_accuracy,
            len(search.cache),
            time.perf_counter() - started,
            seconds,
            best,
            constraints=cfg.limits_table(
                final["params"], final["val_accuracy"], final["macs"], best.latency_ms if cfg.measures_latency else None
            ),
            front=front,
            finalists=[
                _finalist_row(r, f, r.edits.key() == best.edits.key(), r.edits.key() == widened)
                for r, _, f in map(tune, finalists)
            ]
            if len(finalists) > 1
            else None,
        )
        emit(Done(report["wall_time_s"], seconds))
        (out / CHECKPOINT).unlink(missing_ok=True)
        return CompressResult(student, spec, report, out)
    except KeyboardInterrupt:
        if not (out / CHECKPOINT).exists():
            raise Interrupted(
                "interrupted before the search started: nothing to resume, run the command again"
            ) from None
        raise Interrupted(
            f"interrupted; the search state after the last policy update is saved: continue with "
            f"`n2n compress --resume {out}`"
        ) from None
    finally:
        emit.close()
        if board is not None:
            board.close()
        if search is not None:
            search.evaluator.close()


@contextlib.contextmanager
def _damaged(out: Path) -> Iterator[None]:
    """Turn what a damaged checkpoint makes the restore raise into one error naming the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as err:
        message = " ".join(str(err).split())[:200]
        raise N2NError(
            f"{out / CHECKPOINT} is damaged ({type(err).__name__}: {message}); the search cannot be resumed, start it "
            "again with --overwrite"
        ) from None


def check_teacher(val_accuracy: float, data: DataBundle) -> None:
    """Stop before the search when the teacher is at chance on the validation split; log its accuracy either way."""
    log.info("teacher validation accuracy %.2f%% on %s", 100 * val_accuracy, data.name)
    floor = teacher_floor(data.num_classes)
    if val_accuracy < floor:
        raise DataError(
            f"the teacher scores {val_accuracy:.2%} on {data.name}'s validation split, below {floor:.1%} "
            f"({data.num_classes} classes: near chance): it is untrained, or gets other inputs than it was trained on "
            "(another data set, or other input normalisation: see --normalize)"
        )


def _meets(search: SearchContext, r: CandidateResult) -> bool:
    """Whether ``r`` is a valid student that meets every constraint and target."""
    return (
        r.valid
        and r.reward != INVALID_REWARD
        and not search.constraints.violated(r.params, r.val_accuracy, r.macs, r.latency_ms)
        and search.target.met(r.params, r.macs, r.latency_ms)
    )


def _counted_model(model: LatencyModel | None) -> dict[str, float] | None:
    """A latency model's counted costs, for the run's start event."""
    return None if model is None else {"ms_per_call": model.ms_per_call, "ms_per_mac": model.ms_per_mac}


def _widened(search: SearchContext, ctx: EvalContext, best: CandidateResult) -> CandidateResult | None:
    """The search's best student widened to the target (``--widen``), evaluated as a candidate: a student that
    stopped under the size the user allows gets the rest as width, in the proportions the search chose. None when it
    cannot grow, or the grown student does not meet every target and constraint."""
    target = size_target(search.target, search.analysis.macs, ctx.teacher_latency_ms, ctx.latency_model)

    def fits(params: int, macs: int, latency_ms: float) -> bool:
        return target.met(params, macs, latency_ms) and not search.constraints.violated(params, 1.0, macs)

    edits = widen_to_target(best.edits, lambda e: build_student(ctx, e), fits, ctx.input_shape, ctx.latency_model)
    if edits is None:
        return None
    if edits.key() not in search.cache:
        t0 = time.perf_counter()
        search.cache[edits.key()] = search.evaluator.evaluate([edits])[0]
        search.seconds["candidates"] = search.seconds.get("candidates", 0.0) + time.perf_counter() - t0
    grown = search.cache[edits.key()]
    log.info("widened to the target: %s parameters (from %s)", f"{grown.params:,}", f"{best.params:,}")
    return grown if _meets(search, grown) else None


def _save_front(
    ctx: EvalContext,
    data: DataBundle,
    cfg: CompressConfig,
    teacher_spec: ModelSpec,
    students: list[tuple[CandidateResult, nn.Module, dict[str, Any]]],
    out: Path,
) -> list[dict[str, Any]]:
    """Save each fine-tuned front student in ``students/<parameters>/``, smallest first; their report rows (the first
    of ``students`` is the chosen one)."""
    root = own_dir(out / "students")
    keep = {str(final["params"]) for _, _, final in students}
    for stale in root.iterdir():  # an earlier run's students (--overwrite): only what n2n saved there
        if stale.name not in keep and stale.is_dir() and not stale.is_symlink() and (stale / "spec.json").is_file():
            shutil.rmtree(stale)
    rows = []
    chosen = students[0][0].edits.key()
    for result, model, final in sorted(students, key=lambda s: s[2]["params"]):
        name = f"students/{final['params']}"
        save_model(
            model,
            teacher_spec.with_edits(result.edits, data=data.name, split_seed=data.split_seed, **final),
            own_dir(out / name),
        )
        cost = measure_cost(model, tuple(data.input_shape), latency=True, timing=REPORT_TIMING)
        rows.append(
            {
                "path": name,
                "chosen": result.edits.key() == chosen,
                "params": final["params"],
                "flops": 2 * final["macs"],
                "val_accuracy": final["val_accuracy"],
                "test_accuracy": final["test_accuracy"],
                "search_val_accuracy": result.val_accuracy,
                "latency_ms": cost["latency_ms"],
                "edits": result.edits.to_dict(),
            }
        )
    return rows


def finalist_rank(final: dict[str, Any], order: int) -> tuple[float, int, int]:
    """How fine-tuned finalists compare, the highest kept: validation accuracy, then fewer parameters, then the
    search's order (``order``, 0 first). Validation cross-entropy ranked worse on MNIST (docs/benchmarks.md)."""
    return final["val_accuracy"], -final["params"], -order


def _finalist_row(result: CandidateResult, final: dict[str, Any], chosen: bool, widened: bool) -> dict[str, Any]:
    """A finalist's line in the report: its search accuracy and how it came out of the fine-tune."""
    return {
        "chosen": chosen,
        "widened": widened,
        "params": final["params"],
        "search_val_accuracy": result.val_accuracy,
        "val_accuracy": final["val_accuracy"],
        "val_loss": final["val_loss"],
        "test_accuracy": final["test_accuracy"],
        "edits": result.edits.to_dict(),
    }


def _no_student(search: SearchContext, cfg: CompressConfig, out: Path) -> str:
    """Why a search ends without a student: nothing valid, or nothing that meets the constraints."""
    valid = [r for r in search.cache.values() if r.valid]
    if not valid:
        return (
            f"no candidate student was valid in {len(search.cache)} evaluations; the reasons are in "
            f"{out / 'events.jsonl'} (field 'reason')"
        )
    smallest = min(valid, key=lambda r: r.params)
    best_acc = max(r.val_accuracy for r in valid)
    limits = ", ".join(
        f"--{name.replace('_', '-')} {getattr(cfg, name)}"
        for name in ("max_params", "max_flops", "max_latency_ms", "min_accuracy", *TARGETS)
        if getattr(cfg, name) is not None
    )
    return (
        f"none of the {len(valid)} valid students met {limits} (smallest: {smallest.params:,} parameters, "
        f"{2 * smallest.macs:,} FLOPs; best validation accuracy {best_acc:.2%}); no student was saved: relax the "
        + (
            "target, search longer, or push harder with a more negative --target-exponent"
            if search.target.set
            else "constraint or search longer"
        )
    )


def _both(first: Listener | None, second: Listener | None) -> Listener | None:
    """A listener that passes each event to ``first`` and then ``second`` (either may be None)."""
    if first is None or second is None:
        return first or second

    def both(event: dict[str, Any]) -> None:
        first(event)
        second(event)

    return both


TARGETS = ("target_params", "target_flops", "target_latency_ms")


def student_finetune(cfg: CompressConfig, data: DataBundle) -> FinetuneSettings:
    """How ``cfg`` fine-tunes a student on ``data``: its fine-tune settings, augmented by the data set's policy (or
    ``--augment``, which the data set was loaded with)."""
    return replace(cfg.finetune_settings(), augment=data.augment)


def finetune_student(
    ctx: EvalContext,
    data: DataBundle,
    cfg: CompressConfig,
    edits: Edits,
    emit: EventSink,
    listener: Listener | None,
    seconds: dict[str, float],
    z_train: torch.Tensor | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the student ``edits`` make of ``ctx``'s teacher and fine-tune it (`n2n.train.finetune.finetune`, by
    ``cfg``'s fine-tune settings); returns it with its size and validation and test accuracy.

    The student starts from the teacher's inherited weights (re-initialised with ``--reinit``) and trains on batches
    augmented by ``data.augment`` (the data set's policy, or ``--augment``). ``z_train`` are the
    teacher's logits on the training split (`training_logits`), computed here when not given and needed (not with
    ``--finetune-targets online``); their time counts towards the fine-tune's.
    """
    t0 = time.perf_counter()
    settings = student_finetune(cfg, data)
    if z_train is None and not settings.online:
        z_train = training_logits(ctx, data, cfg)
    torch.manual_seed(cfg.seed)
    compute = ctx.settings.compute
    student = compute.model(build_student(ctx, edits))
    emit(Finetune(settings.steps(len(data.train)), count_params(student)))
    on_step = None if listener is None else lambda step: listener(FinetuneStep(step).to_dict())
    student, best_acc = finetune(student, data, z_train, settings, compute, on_step, teacher=ctx.teacher)
    seconds["finetune"] = seconds.get("finetune", 0.0) + time.perf_counter() - t0  # the front's too
    # cross-entropy on the validation split: a finer measure than accuracy, where students tie image for image
    val_logits = predict_logits(student, data.val.x, cfg.eval_batch_size, fold_bn=True)
    return student, {
        "params": count_params(student),
        "macs": count_macs(student, data.input_shape),
        "val_accuracy": best_acc,
        "val_loss": torch.nn.functional.cross_entropy(val_logits, data.val.y).item(),
        "test_accuracy": accuracy(student, data.test.x, data.test.y, cfg.eval_batch_size),
    }
