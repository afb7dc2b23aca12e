"""What the command line shows while and after it works: rich progress bars for the search's events and tables.

Library code only logs (``logging``); every print of ``n2n`` goes through here or through :data:`console`.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


class Display:
    """Turns search events into rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None
        self.best = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":  # before the first candidate: what the student will be measured against
            weak = " (weak: check its training and preprocessing)" if event.get("weak_teacher") else ""
            self.progress.console.print(
                f"teacher: {event['teacher_params']:,} parameters, {event['teacher_val_accuracy']:.2%} validation "
                f"accuracy{weak}"
            )
        elif kind == "stage":
            self._restart(f"stage {event['stage']}", event["updates"])
            self.progress.update(self.task, completed=event.get("completed", 0))
        elif kind == "update":
            best = event.get("reward_best")
            desc = (
                f"stage {event['stage']}  mean R {event['reward_mean']:+.3f}  best R {best:+.3f}"
                if best is not None
                else f"stage {event['stage']}"
            )
            self.progress.update(self.task, advance=1, description=desc)
        elif kind == "finetune":
            self._restart(
                f"fine-tune ({event['params']:,} parameters)" if "params" in event else "fine-tune", event["steps"]
            )
        elif kind == "finetune_step":
            self.progress.update(self.task, completed=event["step"])

    def _restart(self, description: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total)
        self.task = self.progress.add_task(description, total=total)


class _LazyProgress(Progress):
    """A progress display that appears with its first bar: a command that fails before it shows anything prints its
    error on one line, with no empty display above it."""

    def __enter__(self) -> _LazyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live.is_started:
            self.stop()

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        if not self.live.is_started:
            self.start()
        return super().add_task(*args, **kwargs)


def progress_display() -> Progress:
    return _LazyProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def analysis_table(title: str, layers: list[dict[str, Any]]) -> Table:
    """``n2n inspect``'s table: one row per layer of :func:`n2n.cli.model_commands.analysis_report`."""
    table = Table(title=title)
    for col, justify in (
        ("#", "right"),
        ("layer", "left"),
        ("type", "left"),
        ("output", "left"),
        ("params", "right"),
        ("FLOPs", "right"),
        ("remove", "left"),
        ("shrink", "left"),
    ):
        table.add_column(col, justify=justify)
    for row in layers:
        table.add_row(
            str(row["index"]),
            row["name"],
            row["type"],
            "x".join(map(str, row["output_shape"])),
            f"{row['params']:,}",
            f"{row['flops']:,}",
            row["remove"],
            row["shrink"],
        )
    return table


def print_table(table: Table) -> None:
    """``table`` on standard output; piped output gets one row per line instead of the terminal's wrapping."""
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def cost_table(title: str, rows: dict[str, dict[str, Any]], speedup: dict[str, Any] | None) -> Table:
    """Parameters, FLOPs, file size, latencies and accuracy per model, with a ratio row when ``speedup`` is given."""
    latency_cols = [(rt, b) for rt, per in next(iter(rows.values()))["latency_ms"].items() for b in per]
    table = Table(title=title)
    for col in ("", "params", "FLOPs", "file", *[f"{rt} b{b} ms" for rt, b in latency_cols], "test accuracy"):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        lat = [r["latency_ms"].get(rt, {}).get(b) for rt, b in latency_cols]
        table.add_row(
            name,
            f"{r['params']:,}",
            f"{r['flops']:,}",
            f"{r['file_bytes'] / 1024:,.0f} KiB",
            *["" if v is None else f"{v:.3f}" for v in lat],
            f"{r['test_accuracy']:.2%}" if "test_accuracy" in r else "",
        )
    if speedup is not None:
        lat = [speedup["latency"].get(rt, {}).get(b) for rt, b in latency_cols]
        table.add_row(
            "speed-up",
            f"{speedup['params']:.1f}x",
            f"{speedup['macs']:.1f}x",
            f"{speedup['file_bytes']:.1f}x",
            *["" if v is None else f"{v:.2f}x" for v in lat],
            "",
        )
    return table


def print_summary(report: dict[str, Any]) -> None:
    """Teacher against student, the other sizes the run saved and what the search cost."""
    t, s = report["teacher"], report["student"]
    table = Table(title="n2n: teacher vs student")
    for col in ("", "params", "FLOPs", "test accuracy"):
        table.add_column(col, justify="right")
    table.add_row("teacher", f"{t['params']:,}", f"{t['flops']:,}", f"{t['test_accuracy']:.2%}")
    table.add_row("student", f"{s['params']:,}", f"{s['flops']:,}", f"{s['test_accuracy']:.2%}")
    table.add_row(
        "ratio",
        f"{report['compression']:.1f}x",
        f"{t['flops'] / max(1, s['flops']):.1f}x",
        f"{report['accuracy_change'] * 100:+.2f} pts",
    )
    Console().print(table)
    front = [row for row in report.get("front") or [] if not row.get("chosen")]
    if front:
        sizes = ", ".join(f"{row['path']} ({row['params']:,} parameters, {row['test_accuracy']:.2%})" for row in front)
        console.print(f"other sizes saved: {sizes}")
    console.print(f"{report['evaluations']} candidates evaluated, wall time {report['wall_time_s']:.0f} s")
