"""Interrupted searches continue where they stopped and end exactly as uninterrupted ones."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from n2n.cli import main
from n2n.runlog import read_events

pytestmark = pytest.mark.slow

SETTINGS = [
    "--data",
    "digits",
    "--workers",
    "1",
    "--updates",
    "3",
    "--rollouts",
    "3",
    "--steps",
    "15",
    "--candidate-examples",
    "300",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "600",
    "--seed",
    "5",
    "--shrink-bases",
    "2",
]
TIMING = {"seconds", "wall_time_s"}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
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
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def reference(teacher, tmp_path_factory):
    """An uninterrupted run with the same settings."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(["compress", "--teacher", str(teacher), "--out", str(out), *SETTINGS]) == 0
    return out


def _start(teacher: Path, out: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "n2n.cli", "compress", "--teacher", str(teacher), "--out", str(out), *SETTINGS]
    # SIGINT back to its default: a test run started in the background by a shell without job control inherits it
    # ignored, and Python then never raises KeyboardInterrupt
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(proc: subprocess.Popen, events: Path, done, timeout: float = 240.0) -> None:
    """Poll the event log until ``done(events)`` holds (fails if the process ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists() and done(list(read_events(events))):
            return
        if proc.poll() is not None:
            pytest.fail(f"the search ended before it could be interrupted:\n{proc.stdout.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("timed out waiting for the search")


def _comparable(run: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in TIMING} for e in read_events(run / "events.jsonl")]


def _assert_same_run(run: Path, reference: Path) -> None:
    assert _comparable(run) == _comparable(reference)
    assert (run / "student" / "model.safetensors").read_bytes() == (
        reference / "student" / "model.safetensors"
    ).read_bytes()
    assert not (run / "checkpoint.safetensors").exists()
    report = json.loads((run / "report.json").read_text())
    assert report["student"] == json.loads((reference / "report.json").read_text())["student"]


def _updates(stage: str, n: int):
    return lambda events: sum(e["event"] == "update" and e["stage"] == stage for e in events) >= n


@pytest.mark.parametrize(
    "when",
    [_updates("remove", 2), _updates("shrink", 1), lambda ev: bool(ev) and ev[-1]["event"] == "finetune"],
    ids=["stage-1", "stage-2", "fine-tune"],
)
def test_sigkill_then_resume_equals_uninterrupted_run(teacher, reference, tmp_path, when):
    run = tmp_path / "run"
    proc = _start(teacher, run)
    _wait_for(proc, run / "events.jsonl", when)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "checkpoint.safetensors").exists()
    assert main(["compress", "--resume", str(run)]) == 0
    _assert_same_run(run, reference)


def test_ctrl_c_checkpoints_and_says_how_to_resume(teacher, reference, tmp_path):
    run = tmp_path / "run"
    proc = _start(teacher, run)
    _wait_for(proc, run / "events.jsonl", _updates("remove", 1))
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"n2n compress --resume {run}" in output
    assert "Traceback" not in output
    assert main(["compress", "--resume", str(run)]) == 0
    _assert_same_run(run, reference)


def test_unfinished_run_is_not_overwritten(teacher, tmp_path, capsys):
    run = tmp_path / "run"
    proc = _start(teacher, run)
    _wait_for(proc, run / "events.jsonl", _updates("remove", 1))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = (run / "events.jsonl").read_bytes()
    assert main(["compress", "--teacher", str(teacher), "--out", str(run), *SETTINGS]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (run / "events.jsonl").read_bytes() == before
    # the interrupted run still has a report: its progress so far
    assert main(["report", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "incomplete" and report["resumable"] and report["evaluations"] >= 1
    assert f"n2n compress --resume {run}" in (run / "report.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--updates", "4"], "drop --updates"),
        (["--teacher", "x"], "drop --teacher"),
    ],
)
def test_resume_rejects_new_settings(tmp_path, capsys, extra, message):
    assert main(["compress", "--resume", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_resume_of_a_directory_without_a_run(tmp_path, capsys):
    assert main(["compress", "--resume", str(tmp_path)]) == 2
    assert "not an n2n run directory" in capsys.readouterr().err
