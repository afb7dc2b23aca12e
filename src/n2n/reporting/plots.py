"""The plots of a run: pure functions from events and report data to matplotlib figures.

Each ``*_figure`` function returns a :class:`~matplotlib.figure.Figure`, or None when the run has nothing to show
yet (a progress report of a search in its first stage has no layer table, a random search no keep-probabilities).
Figures are made without pyplot (no global state, no display), and :func:`png` turns one into PNG bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from n2n.reporting.rundata import RunView

STAGE_COLOURS = {"remove": "tab:blue", "shrink": "tab:orange"}
STAGE_TITLES = {"remove": "stage 1: remove layers", "shrink": "stage 2: shrink layers"}
RUN_COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
KIND_MARKERS = {"rl": "o", "random": "s", "uniform": "P", "scratch": "X"}
TIME_PARTS = {
    "teacher_logits": "teacher logits",
    "candidates": "candidate training (distillation)",
    "evaluation": "candidate evaluation (validation accuracy)",
    "policy": "policy updates",
    "finetune": "fine-tune",
}


def png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def count_label(value: float, _position: Any = None) -> str:
    """A parameter count as a short axis label: 950, 20k, 1.5M."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _minor_count_label(value: float, _position: Any = None) -> str:
    """Labels between the powers of ten only at 2x and 5x, so a log axis over several decades stays legible."""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return count_label(value) if mantissa in (2, 5) else ""


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (parameters, accuracy) points no other point beats: none is as small and at least as accurate.

    Sorted by parameters; accuracy rises strictly along the front.
    """
    front: list[tuple[float, float]] = []
    for params, acc in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((params, acc))
    return front


def valid_candidates(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Candidate events of students that were built and scored, each architecture once (cached repeats dropped)."""
    return [e for e in events if e.get("event") == "candidate" and not e.get("reason") and not e.get("cached")]


def _stages(events: Sequence[dict[str, Any]], kind: str) -> list[str]:
    return list(dict.fromkeys(e["stage"] for e in events if e.get("event") == kind))


# ---------------------------------------------------------------- reward per policy update
def reward_figure(events: Sequence[dict[str, Any]]) -> Figure | None:
    """Per stage: the mean reward of each update's rollouts, the best reward so far and the baseline b."""
    updates = [e for e in events if e.get("event") == "update"]
    stages = _stages(updates, "update")
    if not stages:
        return None
    fig = Figure(figsize=(5.2 * len(stages), 3.6), layout="constrained")
    axes = fig.subplots(1, len(stages), sharey=True, squeeze=False)[0]
    for ax, stage in zip(axes, stages, strict=True):
        mine = [u for u in updates if u["stage"] == stage]
        x = [u["update"] + 1 for u in mine]
        nan = float("nan")
        ax.plot(
            x,
            [nan if u["reward_best"] is None else u["reward_best"] for u in mine],
            "-",
            color="tab:green",
            lw=2,
            label="best so far",
        )
        ax.plot(
            x,
            [u["reward_mean"] for u in mine],
            "o-",
            color=STAGE_COLOURS.get(stage, "tab:gray"),
            label="mean of the rollouts",
        )
        ax.plot(
            x,
            [nan if u["baseline"] is None else u["baseline"] for u in mine],
            "--",
            color="0.4",
            label="baseline b (before the update)",
        )
        ax.set_title(STAGE_TITLES.get(stage, stage))
        ax.set_xlabel("policy update")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0].set_ylabel("reward R")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    return fig


# ---------------------------------------------------------------- accuracy against parameters
def accuracy_figure(runs: Sequence[RunView], colour_by: str = "stage") -> Figure | None:
    """Every evaluated candidate as validation accuracy against parameters (log scale), with each run's Pareto
    front, the teacher, the chosen student (after the search and after its fine-tune) and baseline students.

    ``colour_by="stage"`` colours the first run's candidates by stage (the other runs are overlays in their own
    colours); ``"run"`` gives every run one colour (the comparison of several runs).
    """
    fig = Figure(figsize=(9, 5.6), layout="constrained")
    ax = fig.subplots()
    drawn = invalid = 0
    teacher = None
    for i, run in enumerate(runs):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)] if colour_by == "run" or i else "black"
        marker = KIND_MARKERS.get(run.kind, "o")
        teacher = teacher or run.teacher_point()
        candidates = valid_candidates(run.events)
        invalid += sum(1 for e in run.of("candidate") if e.get("reason") and not e.get("cached"))
        if colour_by == "stage" and i == 0:
            for stage in _stages(candidates, "candidate"):
                mine = [e for e in candidates if e["stage"] == stage]
                ax.scatter(
                    [e["params"] for e in mine],
                    [100 * e["val_accuracy"] for e in mine],
                    s=22,
                    alpha=0.6,
                    color=STAGE_COLOURS.get(stage),
                    marker=marker,
                    label=f"candidates, {stage} ({len(mine)})",
                )
        elif candidates:
            ax.scatter(
                [e["params"] for e in candidates],
                [100 * e["val_accuracy"] for e in candidates],
                s=22,
                alpha=0.45,
                color=colour,
                marker=marker,
                label=f"{run.label}: candidates ({len(candidates)})",
            )
        drawn += len(candidates)
        front = pareto_front((e["params"], e["val_accuracy"]) for e in candidates)
        if len(front) > 1:
            ax.step(
                [p for p, _ in front],
                [100 * a for _, a in front],
                where="post",
                color=colour,
                lw=1.5,
                label="Pareto front" if len(runs) == 1 else f"{run.label}: Pareto front",
            )
        _mark_students(ax, run, colour, name="" if len(runs) == 1 else f"{run.label}: ")
    if teacher is not None:
        ax.scatter(
            [teacher[0]],
            [100 * teacher[1]],
            marker="*",
            s=260,
            color="gold",
            edgecolor="black",
            zorder=5,
            label=f"teacher ({teacher[0]:,} params)",
        )
    if not ax.collections and not ax.lines:
        return None
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(count_label))
    ax.xaxis.set_minor_formatter(FuncFormatter(_minor_count_label))
    ax.xaxis.set_tick_params(which="minor", labelsize="small")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("validation accuracy (%)")
    note = f", {invalid} invalid not shown" if invalid else ""
    ax.set_title(f"{drawn} evaluated students{note}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="small", framealpha=0.85)
    return fig


def _mark_students(ax: Any, run: RunView, colour: str, name: str) -> None:
    """The chosen student of a finished run (search figure -> fine-tuned), or each stage's best so far."""
    report = run.report or {}
    student = report.get("student")
    if student and run.finished:
        final = (student["params"], 100 * student["val_accuracy"])
        if run.kind in ("uniform", "scratch"):
            ax.scatter(
                *final,
                marker=KIND_MARKERS[run.kind],
                s=150,
                color=colour,
                edgecolor="black",
                zorder=6,
                label=f"{name or run.label + ': '}student, fine-tuned",
            )
            return
        searched = (student["params"], 100 * student["search_val_accuracy"])
        ax.scatter(
            *searched,
            marker="o",
            s=170,
            facecolor="none",
            edgecolor=colour,
            lw=2,
            zorder=6,
            label=f"{name}chosen student (search)",
        )
        ax.scatter(
            *final,
            marker="D",
            s=90,
            color=colour,
            edgecolor="black",
            zorder=6,
            label=f"{name}chosen student, fine-tuned",
        )
        ax.annotate("", xy=final, xytext=searched, arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2})
        return
    for stage, info in (report.get("stages") or {}).items():
        best = info.get("best")
        if best:
            ax.scatter(
                best["params"],
                100 * best["val_accuracy"],
                marker="o",
                s=170,
                facecolor="none",
                edgecolor=STAGE_COLOURS.get(stage, colour),
                lw=2,
                zorder=6,
                label=f"{name}best so far, {stage}",
            )


# ---------------------------------------------------------------- teacher layers against student layers
def layers_figure(layers: Sequence[dict[str, Any]]) -> Figure | None:
    """Per teacher layer: its width, the student's width, and which layers were removed."""
    if not layers:
        return None
    fig = Figure(figsize=(9, 1.2 + 0.32 * len(layers)), layout="constrained")
    ax = fig.subplots()
    y = list(range(len(layers)))
    widest = max(row["teacher_out"] for row in layers)
    removed_colour = "#f4c7c3"
    ax.barh(
        y,
        [row["teacher_out"] for row in layers],
        height=0.8,
        color=[removed_colour if row["status"] == "removed" else "0.85" for row in layers],
    )
    colours = ["tab:green" if row["student_out"] == row["teacher_out"] else "tab:orange" for row in layers]
    ax.barh(y, [row["student_out"] for row in layers], height=0.5, color=colours, label="student")
    for k, row in enumerate(layers):
        if row["status"] == "removed":
            text, colour = "removed", "tab:red"
        else:
            share = row["student_out"] / row["teacher_out"]
            text, colour = f"{row['student_out']} / {row['teacher_out']} ({share:.0%})", "black"
        ax.text(row["teacher_out"] + widest * 0.01, k, text, va="center", fontsize="small", color=colour)
    ax.set_yticks(y, [f"{row['name']} ({row['kind']})" for row in layers])
    ax.invert_yaxis()
    ax.set_xlim(0, widest * 1.3)
    ax.set_xlabel("output channels / features")
    removed = sum(row["status"] == "removed" for row in layers)
    ax.set_title(f"teacher vs student, layer by layer ({removed} of {len(layers)} removed)")
    handles = [
        _patch("0.85", "teacher width"),
        _patch("tab:green", "student: kept whole"),
        _patch("tab:orange", "student: shrunk"),
        _patch(removed_colour, "removed"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize="small", frameon=False)
    return fig


def _patch(colour: str, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, label=label)


# ---------------------------------------------------------------- what the policies learned
def removal_policy_figure(events: Sequence[dict[str, Any]], layer_names: Sequence[str] = ()) -> Figure | None:
    """Heat map of the removal policy's keep-probability per layer (rows) after each update (columns)."""
    updates = [e for e in events if e.get("event") == "update" and e.get("stage") == "remove" and e.get("probs")]
    if not updates:
        return None
    rows = len(updates[0]["probs"])
    names = list(layer_names) if len(layer_names) == rows else [f"layer {i}" for i in range(rows)]
    matrix = [[u["probs"][r] for u in updates] for r in range(rows)]
    return _heat_map(
        matrix,
        names,
        [u["update"] + 1 for u in updates],
        "RdYlGn",
        "keep probability",
        "removal policy: probability of keeping each layer",
    )


def shrink_choices(events: Sequence[dict[str, Any]]) -> tuple[list[str], list[int], list[list[float]]]:
    """Mean keep-fraction the shrink policy chose per layer (rows) and update (columns), from candidate edits.

    Layers the policy never shrank in any rollout are left out; a layer absent from a rollout's edits kept 1.0.
    Returns (layer names, update numbers, matrix).
    """
    candidates = [e for e in events if e.get("event") == "candidate" and e.get("stage") == "shrink"]
    names = list(dict.fromkeys(name for e in candidates for name, _ in e["edits"]["keep"]))
    updates = sorted({e["update"] for e in candidates})
    matrix = []
    for name in names:
        row = []
        for u in updates:
            chosen = [dict(map(tuple, e["edits"]["keep"])).get(name, 1.0) for e in candidates if e["update"] == u]
            row.append(sum(chosen) / len(chosen))
        matrix.append(row)
    return names, [u + 1 for u in updates], matrix


def shrink_policy_figure(events: Sequence[dict[str, Any]], layer_order: Sequence[str] = ()) -> Figure | None:
    """Heat map of the keep-fraction the shrink policy chose per layer, averaged over each update's rollouts."""
    names, updates, matrix = shrink_choices(events)
    if not names:
        return None
    order = {name: i for i, name in enumerate(layer_order)}
    rows = sorted(range(len(names)), key=lambda r: order.get(names[r], len(order) + r))
    return _heat_map(
        [matrix[r] for r in rows],
        [names[r] for r in rows],
        updates,
        "viridis",
        "mean kept fraction",
        "shrink policy: fraction of channels kept per layer (mean of rollouts)",
    )


def _heat_map(
    matrix: list[list[float]], rows: list[str], columns: list[int], cmap: str, what: str, title: str
) -> Figure:
    fig = Figure(figsize=(min(max(6.0, 3 + 0.45 * len(columns)), 14), 1.4 + 0.32 * len(rows)), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    if len(columns) <= 30 and len(rows) <= 30:
        for r, values in enumerate(matrix):
            for c, v in enumerate(values):
                dark = v < 0.5 if cmap == "viridis" else not 0.2 < v < 0.8
                ax.text(
                    c,
                    r,
                    f"{v:.2f}"[1:] if v < 1 else "1",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    step = max(1, math.ceil(len(columns) / 20))
    ax.set_xticks(range(0, len(columns), step), [str(c) for c in columns[::step]])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("policy update")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=what, shrink=0.9)
    return fig


# ---------------------------------------------------------------- where the time went
def time_parts(seconds: dict[str, float], wall_time_s: float | None) -> list[tuple[str, float]]:
    """(label, seconds) of each part of a run in a fixed order, with the rest of the wall time as "other"."""
    parts = [(label, float(seconds[key])) for key, label in TIME_PARTS.items() if seconds.get(key)]
    if wall_time_s is not None:
        rest = wall_time_s - sum(s for _, s in parts)
        if rest > 0:
            parts.append(("other (surgery checks, start-up, reports)", rest))
    return parts


def time_figure(seconds: dict[str, float], wall_time_s: float | None = None) -> Figure | None:
    """Horizontal bars: seconds spent in each part of the run, with its share of the total."""
    parts = time_parts(seconds, wall_time_s)
    if not parts:
        return None
    total = sum(s for _, s in parts)
    fig = Figure(figsize=(9, 0.9 + 0.45 * len(parts)), layout="constrained")
    ax = fig.subplots()
    y = list(range(len(parts)))
    ax.barh(y, [s for _, s in parts], color="tab:blue")
    for k, (_, s) in enumerate(parts):
        ax.text(s, k, f"  {s:,.1f} s ({s / total:.0%})", va="center", fontsize="small")
    ax.set_yticks(y, [label for label, _ in parts])
    ax.invert_yaxis()
    ax.set_xlim(0, max(s for _, s in parts) * 1.3)
    ax.set_xlabel("seconds")
    ax.set_title(f"where the time went ({total:,.0f} s)")
    return fig
