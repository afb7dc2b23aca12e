"""What a file someone hands over may make n2n do: run no code, write nowhere else, lose no run, save no violator."""

import json
import os
import re

import pytest
import torch

import n2n
from n2n.cli import main
from n2n.errors import N2NError
from n2n.files import RunLock, atomic_write, check_writable_dir, write_text
from n2n.models.io import UntrustedCodeError, load_model, save_model

TINY = [
    "--updates",
    "1",
    "--rollouts",
    "2",
    "--steps",
    "5",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "5",
    "--workers",
    "1",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("trust") / "teacher"
    assert main(["train-teacher", "--arch", "lenet5", "--data", "digits", "--epochs", "10", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def finished_run(teacher, tmp_path_factory):
    run = tmp_path_factory.mktemp("trust") / "run"
    assert main(["compress", "--teacher", str(teacher), "--out", str(run), *TINY]) == 0
    return run


def _import_spec(directory, target, kwargs):
    spec = json.loads((directory / "spec.json").read_text())
    spec["arch"] = {"source": "import", "target": target, "kwargs": kwargs}
    (directory / "spec.json").write_text(json.dumps(spec))


@pytest.mark.slow  # trains a teacher and runs searches
def test_load_model_runs_nothing_a_spec_names(teacher, tmp_path):
    model, spec = load_model(teacher)
    save_model(model, spec, tmp_path / "m")
    _import_spec(tmp_path / "m", "os:system", {"command": f"touch {tmp_path}/pwned"})
    with pytest.raises(UntrustedCodeError, match=r"'os:system'.*--trust-code \(trust_code=True in Python\)"):
        n2n.load_model(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow  # trains a teacher and runs searches
def test_trusted_code_is_imported_only_when_asked(teacher, tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "from n2n.models.zoo import create_model\n"
        "CALLS = []\n"
        "def build(**kwargs):\n"
        "    CALLS.append(kwargs)\n"
        "    return create_model('lenet5', **kwargs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    model, spec = load_model(teacher)
    save_model(model, spec, tmp_path / "m")
    _import_spec(tmp_path / "m", "mynets:build", spec.arch["kwargs"])
    with pytest.raises(UntrustedCodeError):
        load_model(tmp_path / "m")
    assert "mynets" not in __import__("sys").modules  # refused before the import
    loaded, _ = load_model(tmp_path / "m", trust_code=True)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    assert main(["evaluate", str(tmp_path / "m"), "--no-latency", "--trust-code"]) == 0


@pytest.mark.slow  # trains a teacher and runs searches
def test_resume_refuses_a_recorded_log_directory_outside_the_run(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("run.json",):
        (run / name).write_text((finished_run / name).read_text())
    config = json.loads((finished_run / "config.json").read_text())
    config["tensorboard"] = str(tmp_path / "elsewhere")
    (run / "config.json").write_text(json.dumps(config))
    assert main(["compress", "--resume", str(run)]) == 2
    assert "outside the run directory" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_writes_replace_links_instead_of_following_them(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "report.md"
    link.symlink_to(victim)
    write_text(link, "new report")
    assert victim.read_text() == "keep me"
    assert not link.is_symlink() and link.read_text() == "new report"


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


@pytest.mark.slow  # trains a teacher and runs searches
def test_export_and_report_do_not_write_through_links(finished_run, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    student = finished_run / "student"
    for name in ("model.onnx",):
        (student / name).unlink(missing_ok=True)
        (student / name).symlink_to(victim)
    assert main(["export", str(student), "--format", "onnx"]) == 0
    assert victim.read_text() == "keep me" and not (student / "model.onnx").is_symlink()
    (finished_run / "report.html").unlink()
    (finished_run / "report.html").symlink_to(victim)
    (finished_run / "plots").rename(finished_run / "plots.old")
    (finished_run / "plots").symlink_to(tmp_path, target_is_directory=True)
    assert main(["report", str(finished_run)]) == 0
    assert victim.read_text() == "keep me"
    assert not (finished_run / "report.html").is_symlink() and not (finished_run / "plots").is_symlink()
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow  # trains a teacher and runs searches
def test_the_event_log_is_never_written_through_a_link(teacher, tmp_path, capsys):
    from n2n.runlog import EventLog

    (tmp_path / "victim").write_text("")
    (tmp_path / "events.jsonl").symlink_to(tmp_path / "victim")
    with pytest.raises(N2NError, match="symbolic link"):
        EventLog(tmp_path / "events.jsonl")


@pytest.mark.slow  # trains a teacher and runs searches
def test_a_run_directory_in_use_is_refused(teacher, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        assert main(["compress", "--teacher", str(teacher), "--out", str(run), *TINY]) == 2
    err = capsys.readouterr().err
    assert "is in use by another n2n search" in err and str(os.getpid()) in err
    assert not (run / "student").exists()


@pytest.mark.slow  # trains a teacher and runs searches
def test_a_finished_run_is_replaced_only_with_overwrite(teacher, finished_run, capsys):
    before = (finished_run / "report.json").read_bytes()
    assert main(["compress", "--teacher", str(teacher), "--out", str(finished_run), *TINY]) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert (finished_run / "report.json").read_bytes() == before
    assert main(["compress", "--teacher", str(teacher), "--out", str(finished_run), "--overwrite", *TINY]) == 0
    assert re.search(r"teacher: [\d,]+ parameters, \d+\.\d\d% validation accuracy", capsys.readouterr().err)


@pytest.mark.slow  # trains a teacher and runs searches
def test_no_student_that_breaks_a_hard_constraint_is_saved(teacher, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["compress", "--teacher", str(teacher), "--out", str(run), "--max-params", "10", *TINY]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the search's progress bars: the reason, on one line
    assert last.startswith("error: none of the") and "met --max-params 10" in last and "no student was saved" in last
    assert not (run / "student").exists() and not (run / "report.json").exists()


@pytest.mark.slow  # trains a teacher and runs searches
def test_reports_show_each_constraint_and_whether_it_held(teacher, tmp_path):
    run = tmp_path / "run"
    params = sum(p.numel() for p in load_model(teacher)[0].parameters())
    assert (
        main(
            [
                "compress",
                "--teacher",
                str(teacher),
                "--out",
                str(run),
                "--max-params",
                str(params - 1),
                "--constraint-mode",
                "soft",
                *TINY,
            ]
        )
        == 0
    )
    report = json.loads((run / "report.json").read_text())
    [row] = report["constraints"]
    assert row["option"] == "--max-params" and row["limit"] == params - 1
    assert row["held"] and row["value"] == report["student"]["params"] <= params - 1
    assert "## Constraints" in (run / "report.md").read_text()
    rebuilt = main(["report", str(run)])
    assert rebuilt == 0 and json.loads((run / "report.json").read_text())["constraints"] == [row]


def test_out_checks_happen_before_any_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert (
        main(
            [
                "train-teacher",
                "--arch",
                "vgg19",
                "--data",
                "digits",
                "--epochs",
                "50",
                "--out",
                str(tmp_path / "file" / "t"),
            ]
        )
        == 2
    )
    assert "which is a file" in capsys.readouterr().err  # at once: training vgg19 for 50 epochs would take minutes


def test_check_writable_dir_names_the_problem(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(N2NError, match="is empty"):
        check_writable_dir("")
    with pytest.raises(N2NError, match="is a file"):
        check_writable_dir(tmp_path / "f")
    with pytest.raises(N2NError, match="lies under .* which is a file"):
        check_writable_dir(tmp_path / "f" / "a" / "b")
    assert check_writable_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()  # checking creates nothing
