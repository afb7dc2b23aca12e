"""report.html of a real tiny run: every plot present and decodable, rebuilt from an interrupted run, several runs
compared, and the --tensorboard scalars."""

import json
import re
import shutil

import pytest
from test_reporting import png_size

from n2n.cli import main
from n2n.runlog import read_events

pytestmark = pytest.mark.slow

RUN_PLOTS = {"reward", "candidates", "layers", "policy_remove", "policy_shrink", "time"}
TINY = [
    "--workers",
    "1",
    "--updates",
    "2",
    "--rollouts",
    "3",
    "--steps",
    "10",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "20",
    "--candidate-examples",
    "200",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher, a finished two-stage search with --tensorboard, and a uniform baseline of half the teacher's size."""
    root = tmp_path_factory.mktemp("report")
    assert (
        main(
            [
                "train-teacher",
                "--arch",
                "vgg11",
                "--width",
                "0.125",
                "--data",
                "digits",
                "--epochs",
                "4",
                "--out",
                str(root / "teacher"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "compress",
                "--teacher",
                str(root / "teacher"),
                "--data",
                "digits",
                "--out",
                str(root / "run"),
                "--tensorboard",
                str(root / "tb"),
                *TINY,
            ]
        )
        == 0
    )
    target = json.loads((root / "run" / "report.json").read_text())["teacher"]["params"] // 2
    assert (
        main(
            [
                "baseline",
                "uniform",
                "--teacher",
                str(root / "teacher"),
                "--target-params",
                str(target),
                "--out",
                str(root / "uniform"),
                "--workers",
                "1",
                "--finetune-epochs",
                "1",
                "--finetune-min-steps",
                "10",
            ]
        )
        == 0
    )
    return root


def _images(page: str) -> list[str]:
    return re.findall(r'<figure id="(\w+)"><img alt="\w+" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', page)


def _assert_plots(run, names):
    assert {p.stem for p in (run / "plots").glob("*.png")} == names
    for name in names:
        width, height = png_size((run / "plots" / f"{name}.png").read_bytes())
        assert width > 300 and height > 100, name


def test_a_finished_run_has_every_plot_the_table_and_the_command(runs):
    run = runs / "run"
    page = (run / "report.html").read_text()
    assert set(_images(page)) == RUN_PLOTS
    _assert_plots(run, RUN_PLOTS)
    report = json.loads((run / "report.json").read_text())
    assert f"{report['student']['params']:,}" in page and f"{report['compression']:.1f}x" in page
    command = json.loads((run / "run.json").read_text())["command"]
    assert command.startswith("n2n compress --teacher ") and "--rollouts 3" in command
    assert command in page and "candidate_examples" in page
    assert "<script" not in page


def test_n2n_report_rebuilds_the_page(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "run", run)
    (run / "report.html").unlink()
    shutil.rmtree(run / "plots")
    assert main(["report", str(run)]) == 0
    assert set(_images((run / "report.html").read_text())) == RUN_PLOTS
    _assert_plots(run, RUN_PLOTS)
    assert json.loads((run / "report.json").read_text())["seconds"]["finetune"] > 0  # from the done event


def _cut_after_stage_one(source, run):
    """A copy of the run as it was when the search was killed after stage 1's updates."""
    shutil.copytree(source, run)
    events = list(read_events(run / "events.jsonl"))
    last = max(i for i, e in enumerate(events) if e["event"] == "update" and e["stage"] == "remove")
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events[: last + 1]))
    shutil.rmtree(run / "student")
    shutil.rmtree(run / "plots")
    for name in ("report.json", "report.md", "report.html"):
        (run / name).unlink()


def test_an_interrupted_run_gets_a_progress_page_with_the_plots_that_can_exist(runs, tmp_path):
    run = tmp_path / "cut"
    _cut_after_stage_one(runs / "run", run)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "Search not finished" in page
    expected = {"reward", "candidates", "policy_remove", "time"}  # no student yet, no stage 2
    assert set(_images(page)) == expected
    _assert_plots(run, expected)


def test_a_baseline_run_records_its_command_and_its_page_rebuilds(runs, tmp_path):
    run = tmp_path / "uniform"
    shutil.copytree(runs / "uniform", run)
    record = json.loads((run / "run.json").read_text())
    assert record["baseline"] == "uniform" and record["data"] == "digits"
    assert record["command"].startswith("n2n baseline uniform --teacher ")
    (run / "report.html").unlink(missing_ok=True)
    assert main(["report", str(run)]) == 0
    assert record["command"] in (run / "report.html").read_text()


def test_several_runs_on_one_plot(runs, tmp_path, capsys):
    cut = tmp_path / "cut"
    _cut_after_stage_one(runs / "run", cut)
    out = tmp_path / "compare"
    assert main(["report", str(runs / "run"), str(runs / "uniform"), str(cut), "--out", str(out)]) == 0
    assert "3 runs compared" in capsys.readouterr().err
    page = (out / "comparison.html").read_text()
    assert _images(page) == ["comparison"]
    assert png_size((out / "plots" / "comparison.png").read_bytes())[0] > 300
    for label in ("run (n2n, seed 0)", "uniform (uniform baseline, seed 0)", "cut (n2n, seed 0)", "not finished"):
        assert label in page


def test_tensorboard_gets_the_search_scalars(runs):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps: dict[str, list[int]] = {}
    for path in sorted((runs / "tb").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    assert set(steps) >= {"reward/mean", "reward/best", "policy/entropy", "candidate/val_acc", "candidate/params"}
    assert steps["reward/mean"] == [0, 1, 2, 3]  # 2 stages x 2 updates
    candidates = [
        e
        for e in read_events(runs / "run" / "events.jsonl")
        if e["event"] == "candidate" and not e["cached"] and not e["reason"]
    ]
    assert len(steps["candidate/val_acc"]) == len(candidates)
