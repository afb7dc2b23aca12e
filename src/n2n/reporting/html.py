"""``report.html``: one self-contained page per run (plots embedded as PNG data URIs, inline CSS, no script), the
same plots as PNG files in ``plots/``, and the comparison page of several runs."""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from n2n.files import own_dir, write_bytes, write_text
from n2n.reporting import plots
from n2n.reporting.rundata import FRONT_HEADER, RunView, front_rows, load_run

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Plot:
    """One plot of the page: its file name (without .png), caption, and how it is drawn from a run."""

    name: str
    caption: str
    draw: Callable[[RunView, Sequence[RunView]], Figure | None]


def _layer_names(run: RunView) -> list[str]:
    return [row["name"] for row in (run.report or {}).get("layers", ())]


def _wall_time(run: RunView) -> float | None:
    done = next(iter(run.of("done")), None)
    return (run.report or {}).get("wall_time_s") or (done or {}).get("wall_time_s")


def _seconds(run: RunView) -> dict[str, float]:
    report = run.report or {}
    if "seconds" in report:
        return report["seconds"]
    return {"candidates": report.get("candidate_seconds") or 0.0}


#: The plots of a run's page, in page order (a plot the run has no data for yet is left out).
RUN_PLOTS = (
    Plot(
        "reward",
        "Reward per policy update, per stage: the mean of the update's rollouts, the best reward so far "
        "and the moving-average baseline b the policy gradient subtracts.",
        lambda run, _: plots.reward_figure(run.events),
    ),
    Plot(
        "candidates",
        "Every evaluated student: validation accuracy after its short distillation against its "
        "parameters (log scale), coloured by stage, with the Pareto front, the teacher and the chosen student "
        "(ring: as the search scored it; diamond: after the final fine-tune).",
        lambda run, others: plots.accuracy_figure([run, *others], colour_by="stage"),
    ),
    Plot(
        "layers",
        "The teacher's layers against the student's: removed layers and the output width kept.",
        lambda run, _: plots.layers_figure((run.report or {}).get("layers", ())),
    ),
    Plot(
        "policy_remove",
        "What the removal policy learned: its probability of keeping each layer after each "
        "update (red: likely removed).",
        lambda run, _: plots.removal_policy_figure(run.events, _layer_names(run)),
    ),
    Plot(
        "policy_shrink",
        "What the shrink policy chose: the fraction of each layer's channels kept, averaged over "
        "each update's rollouts (layers it never shrank are left out).",
        lambda run, _: plots.shrink_policy_figure(run.events, _layer_names(run)),
    ),
    Plot("time", "Where the time went.", lambda run, _: plots.time_figure(_seconds(run), _wall_time(run))),
)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.status { color: #a60; font-weight: bold; }
table { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; } th { background: #f3f3f3; } td.n { text-align: right; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.92em; margin-top: 0.3em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
.kv td:first-child { font-family: monospace; }
"""


def _cell(value: Any, numeric: bool = True) -> str:
    return f'<td class="n">{html.escape(str(value))}</td>' if numeric else f"<td>{html.escape(str(value))}</td>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v, k >= numeric_from) for k, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2%}"


def summary_html(run: RunView) -> str:
    """The figures of a run: teacher and student, or each stage's best so far while the search runs."""
    report = run.report or {}
    if run.finished:
        t, s = report["teacher"], report["student"]
        rows = [
            ["teacher", f"{t['params']:,}", f"{t['flops']:,}", _pct(t["val_accuracy"]), _pct(t["test_accuracy"])],
            ["student", f"{s['params']:,}", f"{s['flops']:,}", _pct(s["val_accuracy"]), _pct(s["test_accuracy"])],
        ]
        table = _table(["", "params", "FLOPs", "val accuracy", "test accuracy"], rows)
        flops = t["flops"] / max(1, s["flops"])
        extra = (
            f"<p><b>{report['compression']:.1f}x</b> fewer parameters, {flops:.1f}x fewer FLOPs, test accuracy "
            f"{report['accuracy_change'] * 100:+.2f} points; {report['evaluations']} candidates evaluated, wall time "
            f"{report['wall_time_s']:,.0f} s.</p>"
        )
        front = front_rows(report)
        if len(front) > 1:
            extra += "<h3>Students at other sizes (in <code>students/</code>)</h3>" + _table(list(FRONT_HEADER), front)
        return table + extra
    teacher = report.get("teacher") or {}
    rows = []
    for stage, info in (report.get("stages") or {}).items():
        best = info.get("best")
        ratio = f"{teacher['params'] / best['params']:.1f}x" if best and teacher.get("params") else ""
        rows.append(
            [
                stage,
                info["updates"],
                "none valid" if best is None else f"{best['reward']:.3f}",
                "" if best is None else f"{best['params']:,}",
                ratio,
                "" if best is None else _pct(best["val_accuracy"]),
            ]
        )
    status = '<p class="status">Search not finished: the figures so far (no student has been fine-tuned yet).'
    if report.get("resumable"):
        status += f" Continue it with <code>n2n compress --resume {html.escape(run.path)}</code>."
    status += "</p>"
    header = ["stage", "updates", "best reward", "params", "compression", "val accuracy"]
    teacher_line = (
        f"<p>Teacher: {teacher['params']:,} parameters, validation accuracy {_pct(teacher.get('val_accuracy'))}; "
        f"{report.get('evaluations', 0)} candidates evaluated so far.</p>"
        if teacher.get("params")
        else ""
    )
    return status + teacher_line + _table(header, rows)


def _figure_html(name: str, caption: str, data: bytes) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure id="{name}"><img alt="{html.escape(name)}" src="{uri}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _settings_html(run: RunView) -> str:
    command = run.source.get("command")
    parts = ["<h2>Command and settings</h2>"]
    parts.append(f"<pre>{html.escape(command)}</pre>" if command else "<p>(the command was not recorded)</p>")
    source = {k: v for k, v in run.source.items() if k != "command"}
    if source:
        parts.append(_table(["input", "value"], [[k, json.dumps(v)] for k, v in source.items()], numeric_from=9))
    if run.config:
        rows = [[k, json.dumps(v)] for k, v in run.config.items()]
        parts.append(
            f'<details><summary>settings ({len(rows)})</summary><div class="kv">'
            + _table(["setting", "value"], rows, numeric_from=9)
            + "</div></details>"
        )
    return "".join(parts)


def _layers_table(run: RunView) -> str:
    layers = (run.report or {}).get("layers")
    if not layers:
        return ""
    rows = [
        [
            r["name"],
            r["kind"],
            r["teacher_out"],
            r["student_out"],
            f"{r['teacher_params']:,}",
            f"{r['student_params']:,}",
            r["status"],
        ]
        for r in layers
    ]
    header = ["layer", "type", "teacher width", "student width", "teacher params", "student params", "status"]
    return f"<details><summary>layer table</summary>{_table(header, rows, numeric_from=2)}</details>"


def page(title: str, body: Sequence[str]) -> str:
    """A complete HTML document with the inline style sheet."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )


def render_run(run: RunView, others: Sequence[RunView] = ()) -> tuple[str, dict[str, bytes]]:
    """The HTML page of one run and its plots as PNG bytes (name -> bytes), for the plots the run has data for."""
    images: dict[str, bytes] = {}
    body = [f"<h1>n2n report: {html.escape(run.label)}</h1>"]
    data = (run.report or {}).get("data") or run.source.get("data")
    if data:
        teacher = html.escape(str(run.source.get("teacher", "")))
        body.append(f"<p>Data set: {html.escape(str(data))}; teacher: {teacher}</p>")
    body += ["<h2>Summary</h2>", summary_html(run)]
    for plot in RUN_PLOTS:
        fig = plot.draw(run, others)
        if fig is None:
            continue
        images[plot.name] = plots.png(fig)
        body.append(_figure_html(plot.name, plot.caption, images[plot.name]))
        if plot.name == "layers":
            body.append(_layers_table(run))
    body.append(_settings_html(run))
    return page(f"n2n report: {run.label}", body), images


def _write(out_html: Path, text: str, images: dict[str, bytes], plots_dir: Path) -> None:
    """Write the page and its PNG files; a run plot of an earlier report that has no data now is deleted."""
    own_dir(plots_dir)
    for plot in RUN_PLOTS:
        if plot.name not in images:
            (plots_dir / f"{plot.name}.png").unlink(missing_ok=True)
    for name, data in images.items():
        write_bytes(plots_dir / f"{name}.png", data)
    write_text(out_html, text)


def write_run_html(run_dir: str | Path, report: dict[str, Any], others: Sequence[str | Path] = ()) -> Path:
    """Write ``report.html`` and ``plots/*.png`` of a run directory (``report`` is its report.json data)."""
    run = Path(run_dir)
    view = load_run(run, report)
    text, images = render_run(view, [load_run(o) for o in others])
    _write(run / "report.html", text, images, run / PLOTS_DIR)
    log.info("wrote %s with %d plots", run / "report.html", len(images))
    return run / "report.html"


def comparison_rows(runs: Sequence[RunView]) -> list[list[Any]]:
    """One row per run: label, student parameters, FLOPs, val and test accuracy, compression, wall time."""
    rows = []
    for run in runs:
        report = run.report or {}
        if run.finished:
            s = report["student"]
            rows.append(
                [
                    run.label,
                    f"{s['params']:,}",
                    f"{s['flops']:,}",
                    _pct(s["val_accuracy"]),
                    _pct(s["test_accuracy"]),
                    f"{report['compression']:.1f}x",
                    f"{report['wall_time_s']:,.0f} s",
                ]
            )
        else:
            rows.append([run.label, "not finished", "", "", "", "", ""])
    return rows


def write_comparison(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Several runs on one accuracy-against-parameters plot: ``out/comparison.html`` and
    ``out/plots/comparison.png``."""
    runs = [load_run(r) for r in run_dirs]
    fig = plots.accuracy_figure(runs, colour_by="run")
    images = {} if fig is None else {"comparison": plots.png(fig)}
    header = ["run", "student params", "FLOPs", "val accuracy", "test accuracy", "compression", "wall time"]
    body = ["<h1>n2n: comparison of runs</h1>", "<h2>Students</h2>", _table(header, comparison_rows(runs))]
    if images:
        body.append(
            _figure_html(
                "comparison",
                "Every evaluated student of each run (validation accuracy after its "
                "short distillation against parameters), each run's Pareto front and its chosen "
                "student (ring: search; diamond/cross: fine-tuned).",
                images["comparison"],
            )
        )
    for run in runs:
        command = run.source.get("command")
        if command:
            body.append(f"<p>{html.escape(run.label)}:</p><pre>{html.escape(command)}</pre>")
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    _write(target / "comparison.html", page("n2n: comparison of runs", body), images, target / PLOTS_DIR)
    return target / "comparison.html"
