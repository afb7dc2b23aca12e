"""A run directory as plain data (events, report, settings), the input of every plot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from n2n.errors import N2NError
from n2n.runlog import read_events


@dataclass
class RunView:
    """What the plots of one run read: its events, its report and its settings, all JSON data.

    Attributes:
        label: how the run is named in legends and tables.
        events: the lines of ``events.jsonl``.
        report: ``report.json`` (a finished run's, or a progress report with ``"status": "incomplete"``), or None.
        config: ``config.json`` (the search settings; baselines add ``"baseline": "uniform" | "scratch"``).
        source: ``run.json`` (teacher, data and the command), empty when the run has none.
        path: the run directory.
    """

    label: str
    events: list[dict[str, Any]]
    report: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def kind(self) -> str:
        """``rl`` or ``random`` for a search, ``uniform`` or ``scratch`` for a baseline."""
        return self.config.get("baseline") or self.config.get("search", "rl")

    @property
    def finished(self) -> bool:
        return self.report is not None and "status" not in self.report

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one kind (``candidate``, ``update``, ...), in order."""
        return [e for e in self.events if e.get("event") == kind]

    def teacher_point(self) -> tuple[int, float] | None:
        """(parameters, validation accuracy) of the teacher, from the start event or the report."""
        start = next(iter(self.of("start")), None)
        if start is not None:
            return start["teacher_params"], start["teacher_val_accuracy"]
        teacher = (self.report or {}).get("teacher") or {}
        if teacher.get("params") and teacher.get("val_accuracy") is not None:
            return teacher["params"], teacher["val_accuracy"]
        return None


KIND_NAMES = {"rl": "n2n", "random": "random search", "uniform": "uniform baseline", "scratch": "scratch baseline"}


def run_label(name: str, config: dict[str, Any]) -> str:
    """``"<dir name> (<method>, seed <s>)"``, e.g. ``"c1 (random search, seed 0)"``."""
    kind = config.get("baseline") or config.get("search", "rl")
    return f"{name} ({KIND_NAMES.get(kind, kind)}, seed {config.get('seed', 0)})"


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def load_run(run_dir: str | Path, report: dict[str, Any] | None = None) -> RunView:
    """Read a run directory; ``report`` (when given) stands in for its ``report.json``."""
    run = Path(run_dir)
    if not (run / "events.jsonl").is_file():
        raise N2NError(f"{run} is not an n2n run directory: it has no events.jsonl")
    config = _json(run / "config.json")
    return RunView(
        label=run_label(run.resolve().name, config),
        events=list(read_events(run / "events.jsonl")),
        report=report if report is not None else (_json(run / "report.json") or None),
        config=config,
        source=_json(run / "run.json"),
        path=str(run),
    )


def front_rows(report: dict[str, Any]) -> list[list[str]]:
    """One row per saved front student: where it is, its size, accuracy and batch-1 latency (markdown and HTML)."""
    rows = []
    for row in report.get("front") or []:
        latency = row.get("latency_ms") or {}
        cells = [f"{latency[rt]['1']:.3f}" if "1" in latency.get(rt, {}) else "" for rt in ("torch", "onnxruntime")]
        name = row["path"] + (" (chosen)" if row.get("chosen") else "")
        rows.append(
            [
                name,
                f"{row['params']:,}",
                f"{row['flops']:,}",
                f"{row['val_accuracy']:.2%}",
                f"{row['test_accuracy']:.2%}",
                *cells,
            ]
        )
    return rows


FRONT_HEADER = (
    "student",
    "params",
    "FLOPs",
    "val accuracy",
    "test accuracy",
    "batch-1 ms (torch)",
    "batch-1 ms (onnxruntime)",
)
