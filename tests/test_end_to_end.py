"""The real commands on tiny settings."""

import json

import pytest
import torch

from n2n.cli import main
from n2n.runlog import read_events

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
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    code = main(
        ["train-teacher", "--arch", "vgg11", "--width", "0.125", "--data", "digits", "--epochs", "4", "--out", str(out)]
    )
    assert code == 0
    return out


def _compress(teacher_dir, out, *extra):
    return main(["compress", "--teacher", str(teacher_dir), "--data", "digits", "--out", str(out), *TINY, *extra])


@pytest.mark.slow
def test_compress_writes_a_complete_run(teacher_dir, tmp_path):
    assert _compress(teacher_dir, tmp_path / "run") == 0
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["compression"] == pytest.approx(report["teacher"]["params"] / report["student"]["params"])
    for who in ("teacher", "student"):
        assert 0.0 <= report[who]["test_accuracy"] <= 1.0
    assert report["teacher"]["test_accuracy"] > 0.5
    assert report["evaluations"] >= 1 and report["wall_time_s"] > 0
    candidates = [e for e in read_events(run / "events.jsonl") if e["event"] == "candidate"]
    assert len(candidates) == 2 * 2 * 3  # stages x updates x rollouts
    assert {e["stage"] for e in candidates} == {"remove", "shrink"}
    for e in candidates:
        assert set(e) >= {
            "stage",
            "update",
            "actions",
            "params",
            "flops",
            "val_accuracy",
            "reward",
            "reason",
            "seconds",
        }
        assert e["reward"] == -1.0 or e["reason"] == ""
    assert sum(not e["cached"] for e in candidates) == report["evaluations"]
    for name in (
        "config.json",
        "report.md",
        "student/spec.json",
        "student/model.safetensors",
        "policy_remove.safetensors",
        "policy_shrink.safetensors",
    ):
        assert (run / name).is_file(), name
    assert "| layer |" in (run / "report.md").read_text()
    # the saved student evaluates to the reported accuracy
    from n2n.cli import evaluate_cmd

    result = evaluate_cmd(str(run / "student"), "digits", None)
    assert result["test_accuracy"] == pytest.approx(report["student"]["test_accuracy"])
    assert result["params"] == report["student"]["params"]


@pytest.mark.slow
def test_same_seed_same_events(teacher_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        assert _compress(teacher_dir, tmp_path / name, "--stages", "remove", "--seed", "3") == 0
        events = [e for e in read_events(tmp_path / name / "events.jsonl") if e["event"] == "candidate"]
        runs.append([{k: v for k, v in e.items() if k != "seconds"} for e in events])
    assert runs[0] == runs[1]
    assert (tmp_path / "a" / "student" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "student" / "model.safetensors"
    ).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ["batch", "risk"])
def test_other_advantages_and_redraws_run_end_to_end(teacher_dir, tmp_path, advantage):
    """--advantage and --max-draws reach the search: each update evaluates --rollouts new students unless it used up
    its max_draws x rollouts draws, and the settings are recorded for resume."""
    run = tmp_path / "run"
    assert _compress(teacher_dir, run, "--advantage", advantage, "--max-draws", "3", "--stages", "remove") == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["advantage"], config["max_draws"]) == (advantage, 3)
    candidates = [e for e in read_events(run / "events.jsonl") if e["event"] == "candidate"]
    for update in (0, 1):
        draws = [e for e in candidates if e["update"] == update]
        assert sum(not e["cached"] for e in draws) == 3 or len(draws) == 3 * 3, update
    fresh = [json.dumps(e["edits"], sort_keys=True) for e in candidates if not e["cached"]]
    assert len(fresh) == len(set(fresh))  # each student trained once


@pytest.mark.slow
@pytest.mark.parametrize("search", ["rl", "random"])
def test_stage_two_shrinks_the_best_stage_one_students(teacher_dir, tmp_path, search):
    """--shrink-bases 3: every stage-2 student is one of the 3 best stage-1 students, shrunk; the choice of base
    learns with the policy (rl) or stays uniform (random), and the first base is stage 1's best."""
    run = tmp_path / "run"
    assert _compress(teacher_dir, run, "--shrink-bases", "3", "--search", search, "--updates", "3") == 0
    events = list(read_events(run / "events.jsonl"))
    stage1 = [e for e in events if e["event"] == "candidate" and e["stage"] == "remove" and e["reason"] == ""]
    ranked = sorted({json.dumps(e["edits"]["removed"]): e["reward"] for e in stage1}.items(), key=lambda kv: -kv[1])
    bases = [json.loads(removed) for removed, _ in ranked[:3]]
    assert len(bases) == 3
    shrink = [e for e in events if e["event"] == "candidate" and e["stage"] == "shrink"]
    for e in shrink:
        assert e["edits"]["removed"] == bases[e["base"]]
    assert len({e["base"] for e in shrink}) >= 2  # 9 draws from 3 bases
    probs = [e["base_probs"] for e in events if e["event"] == "update" and e["stage"] == "shrink"]
    assert all(sum(p) == pytest.approx(1.0, abs=1e-3) and len(p) == 3 for p in probs)
    if search == "random":
        assert all(p == [0.3333] * 3 for p in probs)
    else:
        assert probs[-1] != probs[0]


@pytest.mark.slow
@pytest.mark.parametrize("stages", ["remove", "shrink"])
def test_single_stage(teacher_dir, tmp_path, stages):
    assert _compress(teacher_dir, tmp_path / stages, "--stages", stages) == 0
    events = [e for e in read_events(tmp_path / stages / "events.jsonl") if e["event"] == "candidate"]
    assert {e["stage"] for e in events} == {stages}


@pytest.mark.slow
def test_init_policy_starts_a_search_on_another_teacher(teacher_dir, tmp_path):
    from safetensors.torch import load_file

    from n2n.errors import ConfigError
    from n2n.search.policies import RemovalPolicy, ShrinkPolicy
    from n2n.search.stages import initial_policy as _initial_policy

    assert _compress(teacher_dir, tmp_path / "a") == 0
    saved = load_file(str(tmp_path / "a" / "policy_remove.safetensors"))
    loaded = _initial_policy(tmp_path / "a", "remove", RemovalPolicy())
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())
    with pytest.raises(ConfigError, match="--fractions"):
        _initial_policy(tmp_path / "a", "shrink", ShrinkPolicy(choices=(0.5, 1.0)))
    # a policy trained on vgg11 (9 layers) drives the search on lenet5 (5 layers)
    other = tmp_path / "lenet"
    assert main(["train-teacher", "--arch", "lenet5", "--data", "digits", "--epochs", "10", "--out", str(other)]) == 0
    assert _compress(other, tmp_path / "b", "--init-policy", str(tmp_path / "a")) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["init_policy"] == str(tmp_path / "a")


@pytest.mark.slow
def test_a_search_where_every_candidate_fails_stops(teacher_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert _compress(teacher_dir, run, "--max-linear-inputs", "1", "--updates", "10", "--stages", "remove") == 2
    assert "every candidate of the first 3 policy updates failed" in capsys.readouterr().err
    updates = [e for e in read_events(run / "events.jsonl") if e["event"] == "update"]
    assert len(updates) == 3


@pytest.mark.slow
def test_random_search_baseline_has_the_same_budget(teacher_dir, tmp_path):
    assert _compress(teacher_dir, tmp_path / "random", "--search", "random") == 0
    events = list(read_events(tmp_path / "random" / "events.jsonl"))
    candidates = [e for e in events if e["event"] == "candidate"]
    assert len(candidates) == 2 * 2 * 3
    removal_actions = [a for e in candidates if e["stage"] == "remove" for a in e["actions"]]
    assert 0 in removal_actions and 1 in removal_actions  # not the policy's keep-mostly start
    assert not (tmp_path / "random" / "policy_remove.safetensors").exists()
    assert (tmp_path / "random" / "student" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_workers_give_the_serial_results(teacher_dir, tmp_path):
    runs = {}
    for workers in ("1", "2"):
        out = tmp_path / workers
        assert _compress(teacher_dir, out, "--workers", workers, "--seed", "4") == 0
        runs[workers] = [
            {k: v for k, v in e.items() if k != "seconds"}
            for e in read_events(out / "events.jsonl")
            if e["event"] == "candidate"
        ]
    assert runs["1"] == runs["2"]
    assert (tmp_path / "1" / "student" / "model.safetensors").read_bytes() == (
        tmp_path / "2" / "student" / "model.safetensors"
    ).read_bytes()


@pytest.mark.slow
def test_paper_protocol_preset(teacher_dir, tmp_path):
    from n2n.settings import PAPER_PROTOCOL

    run = tmp_path / "paper"
    code = main(
        [
            "compress",
            "--teacher",
            str(teacher_dir),
            "--data",
            "digits",
            "--out",
            str(run),
            "--protocol",
            "paper",
            "--workers",
            "1",
            "--updates",
            "1",
            "--rollouts",
            "2",
            "--candidate-examples",
            "64",
            "--candidate-epochs",
            "1",
            "--finetune-epochs",
            "1",
            "--finetune-min-steps",
            "5",
        ]
    )
    assert code == 0
    config = json.loads((run / "config.json").read_text())
    assert config["protocol"] == "paper" and config["reinit"] is True
    for key in ("lr", "weight_decay", "removal_lr", "removal_hidden", "shrink_hidden", "distill"):
        assert config[key] == PAPER_PROTOCOL[key], key
    assert config["fractions"] == list(PAPER_PROTOCOL["fractions"])
    assert (config["updates"], config["rollouts"], config["candidate_epochs"]) == (1, 2, 1.0)  # explicit options win
    preset = n2n_config_preset()
    assert preset.updates == 100 and preset.candidate_epochs == 5.0 and preset.rollouts == 5


def n2n_config_preset():
    from n2n import CompressConfig

    return CompressConfig.preset("paper")


@pytest.mark.slow
def test_uniform_and_scratch_baselines(teacher_dir, tmp_path):
    run = tmp_path / "run"
    assert _compress(teacher_dir, run, "--stages", "remove") == 0
    target = json.loads((run / "report.json").read_text())["student"]["params"]
    fine = ["--workers", "1", "--finetune-epochs", "1", "--finetune-min-steps", "10"]
    assert (
        main(
            [
                "baseline",
                "uniform",
                "--teacher",
                str(teacher_dir),
                "--target-params",
                str(target),
                "--data",
                "digits",
                "--out",
                str(tmp_path / "uniform"),
                *fine,
            ]
        )
        == 0
    )
    uniform = json.loads((tmp_path / "uniform" / "report.json").read_text())
    assert uniform["student"]["params"] <= target
    fractions = {f for _, f in uniform["student"]["edits"]["keep"]}
    assert len(fractions) == 1 and 0 < fractions.pop() < 1  # one keep-fraction for every layer
    assert main(["baseline", "scratch", "--run", str(run), "--out", str(tmp_path / "scratch")]) == 0
    scratch = json.loads((tmp_path / "scratch" / "report.json").read_text())
    found = json.loads((run / "report.json").read_text())["student"]
    assert scratch["student"]["params"] == found["params"] and scratch["student"]["edits"] == found["edits"]
    assert json.loads((tmp_path / "scratch" / "config.json").read_text())["reinit"] is True


@pytest.mark.slow
def test_another_seed_validates_on_the_split_the_teacher_held_out(teacher_dir, tmp_path, capsys):
    """``--seed`` seeds the search; the validation split stays the one the teacher never trained on, since another
    seed's split would hold teacher training examples and overrate the teacher (and every reward normalised by it)."""
    teacher = json.loads((teacher_dir / "spec.json").read_text())["meta"]
    assert teacher["split_seed"] == 0
    run = tmp_path / "run"
    assert _compress(teacher_dir, run, "--stages", "remove", "--updates", "1", "--seed", "2") == 0
    assert "validation split: seed 0" in capsys.readouterr().err
    assert json.loads((run / "run.json").read_text())["split_seed"] == 0
    report = json.loads((run / "report.json").read_text())
    assert report["teacher"]["val_accuracy"] == pytest.approx(teacher["val_accuracy"])  # measured on its own split
    assert json.loads((run / "student" / "spec.json").read_text())["meta"]["split_seed"] == 0
    uniform = tmp_path / "uniform"
    code = main(
        ["baseline", "uniform", "--teacher", str(teacher_dir), "--target-params", "20000", "--data", "digits"]
        + ["--seed", "2", "--out", str(uniform), "--workers", "1", "--finetune-epochs", "1"]
    )
    assert code == 0
    assert json.loads((uniform / "run.json").read_text())["split_seed"] == 0
