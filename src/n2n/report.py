"""``report.json`` and ``report.md``: the figures of a run and the per-layer before/after table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from n2n.data import DataBundle
from n2n.models.io import ModelSpec
from n2n.search.candidate import CandidateResult
from n2n.search.distill import accuracy
from n2n.surgery import Analysis, count_macs, count_params


def layer_table(analysis: Analysis, student: nn.Module, spec: ModelSpec) -> list[dict[str, Any]]:
    """Teacher layer -> what became of it in the student (removed, or its kept width)."""
    removed = set(spec.edits.removed)
    rows = []
    for layer in analysis.layers:
        row = {"name": layer.name, "kind": layer.kind, "teacher_out": layer.out_channels, "teacher_params": layer.params}
        if layer.name in removed:
            row.update(student_out=0, student_params=0, status="removed")
        else:
            module = student.get_submodule(layer.name)
            out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            row.update(student_out=out, student_params=count_params(module),
                       status="kept" if out == layer.out_channels else f"shrunk to {out / layer.out_channels:.0%}")
        rows.append(row)
    return rows


def write_reports(
    out: Path, analysis: Analysis, teacher: nn.Module, student: nn.Module, spec: ModelSpec, data: DataBundle,
    teacher_val_accuracy: float, evaluations: int, wall_time_s: float, seconds: dict[str, float],
    best: CandidateResult,
) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` into ``out``; returns the report."""
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
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    return report


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
