"""``report.json``, ``report.md`` and ``report.html``: the figures of a run and the per-layer before/after table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from n2n.data import DataBundle
from n2n.files import write_json, write_text
from n2n.measure import REPORT_TIMING, compare_costs
from n2n.models.io import ModelSpec
from n2n.reporting.rundata import FRONT_HEADER, front_rows
from n2n.search.candidate import CandidateResult
from n2n.surgery import Analysis, count_macs, count_params
from n2n.train.evaluate import accuracy

log = logging.getLogger(__name__)


def layer_table(analysis: Analysis, student: nn.Module, spec: ModelSpec) -> list[dict[str, Any]]:
    """Teacher layer -> what became of it in the student (removed, or its kept width)."""
    removed = set(spec.edits.removed)
    rows = []
    for layer in analysis.layers:
        row = {
            "name": layer.name,
            "kind": layer.kind,
            "teacher_out": layer.out_channels,
            "teacher_params": layer.params,
        }
        if layer.name in removed:
            row.update(student_out=0, student_params=0, status="removed")
        else:
            module = student.get_submodule(layer.name)
            out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            row.update(
                student_out=out,
                student_params=count_params(module),
                status="kept" if out == layer.out_channels else f"shrunk to {out / layer.out_channels:.0%}",
            )
        rows.append(row)
    return rows


def write_reports(
    out: Path,
    analysis: Analysis,
    teacher: nn.Module,
    student: nn.Module,
    spec: ModelSpec,
    data: DataBundle,
    teacher_val_accuracy: float,
    evaluations: int,
    wall_time_s: float,
    seconds: dict[str, float],
    best: CandidateResult,
    latency: bool = True,
    constraints: list[dict[str, Any]] | None = None,
    front: list[dict[str, Any]] | None = None,
    finalists: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.html`` (with ``plots/``) into ``out``; returns the report.

    ``cost`` holds teacher and student measured side by side (parameters, MACs, file size, latency on this machine
    unless ``latency`` is False) with the teacher/student ratios. ``front`` lists the fine-tuned students saved in
    ``students/`` (the chosen one among them); ``finalists`` the students fine-tuned to choose from (``--finalists``).
    """
    teacher_test = accuracy(teacher, data.test.x, data.test.y)
    s_params = count_params(student)
    report = {
        "data": data.name,
        "teacher": {
            "params": analysis.params,
            "macs": analysis.macs,
            "flops": 2 * analysis.macs,
            "val_accuracy": teacher_val_accuracy,
            "test_accuracy": teacher_test,
            "arch": spec.arch,
        },
        "student": {
            "params": s_params,
            "macs": count_macs(student, data.input_shape),
            "flops": 2 * count_macs(student, data.input_shape),
            "val_accuracy": spec.meta["val_accuracy"],
            "test_accuracy": spec.meta["test_accuracy"],
            "edits": spec.edits.to_dict(),
            "search_val_accuracy": best.val_accuracy,
            "search_reward": best.reward,
        },
        "compression": analysis.params / s_params,
        "accuracy_change": spec.meta["test_accuracy"] - teacher_test,
        "evaluations": evaluations,
        "wall_time_s": wall_time_s,
        "seconds": seconds,
        "layers": layer_table(analysis, student, spec),
        "cost": compare_costs(teacher, student, tuple(data.input_shape), latency=latency, timing=REPORT_TIMING),
        "constraints": constraints or [],
        "front": front or [],
        **({"finalists": finalists} if finalists else {}),
        "weak_teacher": teacher_val_accuracy < weak_teacher_below(data.num_classes),
    }
    write_json(out / "report.json", report)
    write_text(out / "report.md", render_markdown(report))
    _write_html(out, report)
    return report


def _write_html(out: Path, report: dict[str, Any]) -> None:
    """``report.html`` and ``plots/``; a plotting failure costs the page (with a warning), never the run."""
    from n2n.reporting.html import write_run_html

    try:
        write_run_html(out, report)
    except Exception as err:  # the student and report.json are written already: keep them
        log.warning(
            "could not write %s (%s: %s); rebuild it with `n2n report %s`",
            out / "report.html",
            type(err).__name__,
            err,
            out,
            exc_info=True,
        )


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report."""
    t, s = report["teacher"], report["student"]
    lines = [
        f"# n2n report ({report['data']})",
        "",
        "| | params | FLOPs | test accuracy |",
        "|---|---:|---:|---:|",
        f"| teacher | {t['params']:,} | {t['flops']:,} | {t['test_accuracy']:.2%} |",
        f"| student | {s['params']:,} | {s['flops']:,} | {s['test_accuracy']:.2%} |",
        "",
        f"Compression {report['compression']:.1f}x, accuracy change {report['accuracy_change'] * 100:+.2f} points, "
        f"{report['evaluations']} candidates evaluated in {report['wall_time_s']:.0f} s.",
        "",
        *cost_markdown(report["cost"]),
        *constraints_markdown(report),
        *front_markdown(report),
        *finalists_markdown(report),
        "## Layers",
        "",
        "| layer | type | teacher width | student width | teacher params | student params | status |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in report["layers"]:
        lines.append(
            f"| {row['name']} | {row['kind']} | {row['teacher_out']} | {row['student_out']} | "
            f"{row['teacher_params']:,} | {row['student_params']:,} | {row['status']} |"
        )
    return "\n".join(lines) + "\n"


def constraints_markdown(report: dict[str, Any]) -> list[str]:
    """The constraints the user set, each with the student's value and whether it held; a weak-teacher warning."""
    lines = []
    if report.get("weak_teacher"):
        lines += [
            f"**Warning: weak teacher** ({report['teacher']['val_accuracy']:.2%} validation accuracy, less than "
            "halfway from chance to perfect): check its preprocessing and training before trusting the student.",
            "",
        ]
    rows = report.get("constraints") or []
    if rows:
        lines += ["## Constraints", "", "| constraint | limit | student | held |", "|---|---:|---:|:-:|"]
        for row in rows:
            value = "not measured" if row["value"] is None else f"{row['value']:,.4g}"
            lines.append(f"| {row['option']} | {row['limit']:,.4g} | {value} | {'yes' if row['held'] else 'no'} |")
        lines.append("")
    return lines


def finalists_markdown(report: dict[str, Any]) -> list[str]:
    """The students fine-tuned to choose the student from (``--finalists``), in the search's order."""
    rows = report.get("finalists") or []
    if not rows:
        return []
    lines = [
        "## Finalists",
        "",
        "The search's best students under the target, each fine-tuned; the student is the most accurate on the "
        "validation split"
        + (
            " (widened: the best one grown to the target, `--widen`)."
            if any(row.get("widened") for row in rows)
            else "."
        ),
        "",
        "| params | search val accuracy | val accuracy | test accuracy | chosen |",
        "|---:|---:|---:|---:|:-:|",
    ]
    for row in rows:
        params = f"{row['params']:,}" + (" (widened)" if row.get("widened") else "")
        lines.append(
            f"| {params} | {row['search_val_accuracy']:.2%} | {row['val_accuracy']:.2%} | "
            f"{row['test_accuracy']:.2%} | {'yes' if row['chosen'] else ''} |"
        )
    return [*lines, ""]


def front_markdown(report: dict[str, Any]) -> list[str]:
    """The students of other sizes the run saved, for a user who needs another point (chosen by validation)."""
    rows = front_rows(report)
    if len(rows) < 2:
        return []
    lines = [
        "## Students at other sizes",
        "",
        "Each is a saved model (`n2n evaluate RUN/students/N --data ...`, `n2n export`); pick one by validation",
        "accuracy.",
        "",
        "| " + " | ".join(FRONT_HEADER) + " |",
        "|---|" + "---:|" * (len(FRONT_HEADER) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def chance(num_classes: int) -> float:
    """The accuracy of guessing uniformly among ``num_classes`` classes."""
    return 1.0 / max(1, num_classes)


def teacher_floor(num_classes: int) -> float:
    """Below this validation accuracy a teacher is refused: twice chance, or a tenth of the way from chance to
    perfect where twice chance means nothing (two classes). Such a teacher almost surely gets other inputs than it
    was trained on (preprocessing, wrong data set) or was never trained."""
    c = chance(num_classes)
    return min(2 * c, c + 0.1 * (1 - c))


def weak_teacher_below(num_classes: int) -> float:
    """Below this validation accuracy (halfway from chance to perfect) a teacher is flagged weak in reports."""
    c = chance(num_classes)
    return c + 0.5 * (1 - c)


def cost_markdown(cost: dict[str, Any]) -> list[str]:
    """The report's cost table: teacher, student and speed-up, one column per measured runtime and batch size."""
    t, s, up = cost["teacher"], cost["student"], cost["speedup"]
    columns = [(rt, b) for rt, per in s["latency_ms"].items() for b in per]
    rows = [
        ["", "params", "FLOPs", "file", *[f"{rt} batch {b} (ms)" for rt, b in columns]],
        ["---"] + ["---:"] * (3 + len(columns)),
    ]
    for name, c in (("teacher", t), ("student", s)):
        latency = [f"{c['latency_ms'].get(rt, {}).get(b, float('nan')):.3f}" for rt, b in columns]
        rows.append([name, f"{c['params']:,}", f"{c['flops']:,}", f"{c['file_bytes'] / 1024:,.1f} KiB", *latency])
    latency = [f"{up['latency'].get(rt, {}).get(b, float('nan')):.2f}x" for rt, b in columns]
    rows.append(["speed-up", f"{up['params']:.1f}x", f"{up['macs']:.1f}x", f"{up['file_bytes']:.1f}x", *latency])
    return ["## Cost (measured on this machine)", "", *("| " + " | ".join(r) + " |" for r in rows), ""]


def rebuild_reports(run_dir: str | Path, trust_code: bool = False) -> dict[str, Any]:
    """Write ``report.json``, ``report.md`` and ``report.html`` of a run directory again, from what is on disk.

    A finished run (with ``student/``) is measured again: its teacher copy, student and data (from ``run.json``).
    An unfinished or interrupted run gets a progress report from ``events.jsonl``: the best candidate of each stage
    so far, with its validation accuracy (no test figures: nothing has been fine-tuned yet).
    ``trust_code`` lets a teacher whose spec names the user's own builder import it (see ``load_model``).
    """
    from n2n.errors import N2NError
    from n2n.runlog import read_events

    run = Path(run_dir)
    if not (run / "events.jsonl").is_file():
        raise N2NError(f"{run} is not an n2n run directory: it has no events.jsonl")
    events = list(read_events(run / "events.jsonl"))
    candidates = [e for e in events if e.get("event") == "candidate" and _candidate_ok(e)]
    done = next((e for e in events if e.get("event") == "done"), None)
    finished = done is not None and (run / "student" / "spec.json").is_file()
    if finished and (run / "run.json").is_file() and (run / "teacher").is_dir():  # baselines keep no teacher copy
        wall = done.get("wall_time_s")
        seconds = done.get("seconds")
        return _rebuild_finished(
            run,
            candidates,
            float(wall) if _number(wall) else 0.0,
            seconds if isinstance(seconds, dict) and all(_number(v) for v in seconds.values()) else None,
            trust_code,
            _front(events),
        )
    return _progress_report(run, events, candidates)


def _front(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The front students the run's last ``front`` event lists, each checked (the event log is read as untrusted)."""
    rows = next((e.get("students") for e in reversed(events) if e.get("event") == "front"), None)
    if not isinstance(rows, list):
        return []
    numbers = ("params", "flops", "val_accuracy", "test_accuracy")

    def ok(row: Any) -> bool:
        return (
            isinstance(row, dict)
            and isinstance(row.get("path"), str)
            and all(_number(row.get(k)) for k in numbers)
            and isinstance(row.get("latency_ms", {}), dict)
            and all(
                isinstance(v, dict) and all(_number(ms) for ms in v.values())
                for v in row.get("latency_ms", {}).values()
            )
        )

    return [row for row in rows if ok(row)]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _candidate_ok(event: dict[str, Any]) -> bool:
    """Whether a candidate event has the fields reports read, with their types (a hand-edited log may not)."""
    edits = event.get("edits")
    return (
        isinstance(event.get("stage"), str)
        and isinstance(edits, dict)
        and isinstance(edits.get("removed", []), list)
        and isinstance(edits.get("keep", []), list)
        and all(_number(event.get(k)) for k in ("params", "val_accuracy", "reward"))
        and _number(event.get("flops", 0))
        and _number(event.get("macs", 0))
        and _number(event.get("seconds") or 0)
        and isinstance(event.get("reason", ""), str | type(None))
        and _edits_ok(edits)
    )


def _best(candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    valid = [e for e in candidates if not e.get("reason")]
    return max(valid, key=lambda e: e["reward"]) if valid else None


def _rebuild_finished(
    run: Path,
    candidates: list[dict[str, Any]],
    wall_time_s: float,
    seconds: dict[str, float] | None,
    trust_code: bool = False,
    front: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    from n2n.data import load_recorded, read_source
    from n2n.models.io import check_edits, load_model
    from n2n.preprocess import match_teacher
    from n2n.settings_file import read_config
    from n2n.surgery import analyze

    source = read_source(run / "run.json")
    config = read_config(run / "config.json")
    teacher, teacher_spec = load_model(run / "teacher", trust_code=trust_code)
    student, spec = load_model(run / "student", trust_code=trust_code)
    _, data = match_teacher(teacher_spec, load_recorded(source, config.seed))  # the inputs the run gave them
    analysis = analyze(teacher, data.input_shape, fix=config.fix, check_removals=False)
    chosen = [e for e in candidates if check_edits(e["edits"]) == spec.edits]  # the search's pick, not the max
    best_event = _best(chosen) or _best(candidates)
    best_event = best_event or {"edits": {}, "params": 0, "macs": 0, "val_accuracy": 0.0, "reward": -1.0}
    best = CandidateResult(
        check_edits(best_event["edits"]),
        best_event["params"],
        best_event["macs"],
        best_event["val_accuracy"],
        best_event["reward"],
        "",
        0.0,
    )
    teacher_val = accuracy(teacher, data.val.x, data.val.y)
    seconds = seconds or {"candidates": sum(e.get("seconds", 0.0) for e in candidates)}
    evaluations = sum(not e.get("cached") for e in candidates)
    val = spec.meta.get("val_accuracy")
    params, macs = count_params(student), count_macs(student, data.input_shape)
    rows = config.limits_table(params, val if _number(val) else 0.0, macs, best.latency_ms)
    return write_reports(
        run,
        analysis,
        teacher,
        student,
        spec,
        data,
        teacher_val,
        evaluations,
        wall_time_s,
        seconds,
        best,
        constraints=rows,
        front=[_measured(run, row, data.input_shape, trust_code) for row in front or []],
    )


def _measured(run: Path, row: dict[str, Any], input_shape: tuple[int, ...], trust_code: bool) -> dict[str, Any]:
    """A front student's row with its latency measured again (events hold no timings); unchanged when its model is
    gone or does not load."""
    from n2n.errors import N2NError
    from n2n.files import inside
    from n2n.measure import measure_cost
    from n2n.models.io import load_model

    path = run / row["path"]
    if not inside(path, run) or not (path / "spec.json").is_file():
        return row
    try:
        model, _ = load_model(path, trust_code=trust_code)
    except N2NError as err:
        log.warning("front student %s not measured: %s", path, err)
        return row
    return {**row, "latency_ms": measure_cost(model, tuple(input_shape), True, REPORT_TIMING)["latency_ms"]}


def _edits_ok(edits: dict[str, Any]) -> bool:
    from n2n.errors import ModelError
    from n2n.models.io import check_edits

    try:
        check_edits(edits)
    except ModelError:
        return False
    return True


def _progress_report(run: Path, events: list[dict[str, Any]], candidates: list[dict[str, Any]]) -> dict[str, Any]:
    start = next((e for e in events if e.get("event") == "start"), {})
    updates = [e for e in events if e.get("event") == "update"]
    stages = {}
    for stage in dict.fromkeys(e["stage"] for e in candidates):
        mine = [e for e in candidates if e["stage"] == stage]
        best = _best(mine)
        stages[stage] = {
            "updates": sum(u["stage"] == stage for u in updates),
            "best": None
            if best is None
            else {k: best[k] for k in ("edits", "params", "flops", "val_accuracy", "reward")},
        }
    report = {
        "status": "incomplete",
        "teacher": {"params": start.get("teacher_params"), "val_accuracy": start.get("teacher_val_accuracy")},
        "stages": stages,
        "evaluations": sum(not e.get("cached") for e in candidates),
        "candidate_seconds": sum(e.get("seconds") or 0.0 for e in candidates),
        "resumable": (run / "checkpoint.safetensors").is_file(),
    }
    lines = [f"# n2n report ({run.name}): search not finished", ""]
    if report["resumable"]:
        lines += [f"Continue it with `n2n compress --resume {run}`.", ""]
    lines += [
        f"{report['evaluations']} candidates evaluated ({report['candidate_seconds']:.0f} s of training).",
        "",
        "| stage | updates | best reward | params | compression | validation accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    teacher_params = report["teacher"]["params"] or 0
    for stage, info in stages.items():
        b = info["best"]
        if b is None:
            lines.append(f"| {stage} | {info['updates']} | none valid | | | |")
        else:
            ratio = f"{teacher_params / b['params']:.1f}x" if teacher_params and b["params"] else ""
            lines.append(
                f"| {stage} | {info['updates']} | {b['reward']:.3f} | {b['params']:,} | {ratio} | "
                f"{b['val_accuracy']:.2%} |"
            )
    write_json(run / "report.json", report)
    write_text(run / "report.md", "\n".join(lines) + "\n")
    _write_html(run, report)
    return report
