"""A size the user names (--target-params and kin) and the fine-tuned front of students at other sizes."""

import json
import math

import pytest
import torch

from n2n.cli import main
from n2n.models.io import load_model
from n2n.runlog import read_events
from n2n.search.candidate import CandidateResult
from n2n.search.front import accuracy_front, pick_front, top_students
from n2n.search.loop import SearchContext
from n2n.search.reward import Constraints, Target
from n2n.surgery import Edits

TINY = [
    "--workers",
    "1",
    "--updates",
    "2",
    "--rollouts",
    "4",
    "--steps",
    "5",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "5",
    "--candidate-examples",
    "200",
]


def result(
    name: str, params: int, acc: float, macs: int = 0, latency: float = 0.0, reason: str = ""
) -> CandidateResult:
    return CandidateResult(Edits.make([name], {}), params, macs, acc, 0.5, reason, 1.0, latency)


def test_target_reward_is_accuracy_under_the_target_and_mnasnet_above_it():
    target = Target(params=1000, exponent=-0.07)
    assert target.reward(0.9, 0.95, 1000) == pytest.approx(0.9 / 0.95)
    assert target.reward(0.9, 0.95, 10) == pytest.approx(0.9 / 0.95)  # smaller than the target earns nothing more
    assert target.reward(0.9, 0.95, 2000) == pytest.approx(0.9 / 0.95 * 2**-0.07)
    assert target.met(1000) and not target.met(1001)
    both = Target(params=1000, flops=100, exponent=-0.5)
    assert both.reward(1.0, 1.0, 4000, macs=100) == pytest.approx(4**-0.5 * 2**-0.5)  # FLOPs are 2 MACs
    assert not both.met(10, macs=51) and both.met(10, macs=50)
    latency = Target(latency_ms=2.0)
    assert latency.met(10**9, latency_ms=2.0) and not latency.met(1, latency_ms=2.5)
    assert not Target().set and Target(flops=1).set
    rows = Target(params=1000).table(999, 0, None)
    assert rows == [{"option": "--target-params", "limit": 1000, "value": 999, "held": True}]


def test_the_search_context_rewards_with_the_target_only_when_one_is_set():
    r = result("a", 5000, 0.8)._replace(reward=0.77)
    ctx = SearchContext(
        analysis=None,
        base=Edits(),
        evaluator=None,
        cache={},
        constraints=Constraints(),
        fractions=(0.5, 1.0),
        teacher_accuracy=0.9,
    )
    assert ctx.reward(r) == 0.77  # the paper reward, as computed by the candidate
    ctx.target = Target(params=2500)
    assert ctx.reward(r) == pytest.approx(0.8 / 0.9 * 2**-0.07)
    assert ctx.reward(r._replace(reward=-1.0)) == -1.0  # not smaller than the teacher stays invalid


def test_a_partway_target_takes_its_share_of_the_compression_in_log_scale():
    target = Target(params=1000, flops=40, latency_ms=2.0, exponent=-0.3)
    half = target.partway(0.5, params=100_000, macs=1000, latency_ms=8.0)
    assert half.params == pytest.approx(10_000)  # 100x fewer parameters: 10x by the stage that aims at it
    assert half.flops == pytest.approx(2000 * (40 / 2000) ** 0.5)  # the teacher's FLOPs are 2 MACs
    assert half.latency_ms == pytest.approx(4.0) and half.exponent == -0.3
    assert target.partway(1.0, 100_000, 1000, 8.0) == target
    assert target.partway(0.5, 100_000, 0, 0).flops == 40  # a cost not measured: the limit stays
    assert Target(params=5000).partway(0.5, 1000).params == 5000  # already met by the teacher
    assert not Target().partway(0.5, 1000).set


def test_a_stage_with_its_own_target_is_rewarded_against_it():
    r = result("a", 5000, 0.9)._replace(reward=0.5)
    ctx = SearchContext(
        analysis=None,
        base=Edits(),
        evaluator=None,
        cache={},
        constraints=Constraints(),
        fractions=(0.5, 1.0),
        target=Target(params=1000),
        stage_targets={"remove": Target(params=5000)},
    )
    assert ctx.reward(r, "remove") == pytest.approx(0.9)  # at the stage's target: accuracy only
    assert ctx.reward(r, "shrink") == ctx.reward(r) == pytest.approx(0.9 * 5**-0.07)


def test_the_front_keeps_students_more_accurate_than_every_smaller_one():
    rs = [
        result("a", 100, 0.80),
        result("b", 200, 0.70),
        result("c", 300, 0.90),
        result("d", 300, 0.95),
        result("e", 400, 0.99, reason="surgery: no"),
        result("f", 500, 0.96),
        result("g", 50, 0.99),
    ]
    front = accuracy_front(rs, ok=lambda r: True)
    assert [r.edits.removed[0] for r in front] == ["g"]  # the smallest is also the most accurate: nothing else
    front = accuracy_front(rs[:-1], ok=lambda r: True)
    assert [r.edits.removed[0] for r in front] == ["a", "d", "f"]
    front = accuracy_front(rs[:-1], ok=lambda r: r.params < 450)  # constraints and targets apply
    assert [r.edits.removed[0] for r in front] == ["a", "d"]


def test_picked_front_students_are_spread_over_sizes_and_apart_from_the_chosen_one():
    front = [result(str(p), p, 0.9 + p / 1e6) for p in (1000, 1100, 2000, 4000, 8000, 8500, 16000)]
    chosen = front[3]  # 4000
    picked = pick_front(front, chosen, k=3)
    assert [r.params for r in picked] == [1000, 16000]  # the two ends: farthest in log-size from 4000
    picked = pick_front(front, chosen, k=5)
    assert [r.params for r in picked] == [1000, 2000, 8000, 16000]
    for a in [*picked, chosen]:
        for b in [*picked, chosen]:
            assert a is b or abs(math.log(a.params / b.params)) >= math.log(1.25) - 1e-12
    assert pick_front(front, chosen, k=1) == []
    weak = [result("w", 500, 0.5), *front]
    assert all(r.params != 500 for r in pick_front(weak, chosen, k=8))  # 40 points below the chosen: not offered


def test_finalists_are_the_best_scored_students_that_pass():
    results = [result("a", 100, 0.9), result("b", 50, 0.95), result("c", 80, 0.95), result("d", 10, 0.99, reason="x")]
    results.append(result("e", 200, 0.97))
    picked = top_students(results, lambda r: r.params <= 100, lambda r: r.val_accuracy, 2)
    assert [r.edits.removed[0] for r in picked] == ["b", "c"]  # tie: the smaller first; d is invalid, e too large
    assert top_students(results, lambda r: False, lambda r: r.val_accuracy, 2) == []


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
                "--seed",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@pytest.mark.slow  # trains a teacher and runs a search
def test_a_target_gives_the_most_accurate_student_under_it_and_the_front_is_saved(teacher, tmp_path, capsys):
    target = 4000
    run = tmp_path / "run"
    assert (
        main(
            [
                "compress",
                "--teacher",
                str(teacher),
                "--data",
                "digits",
                "--out",
                str(run),
                *TINY,
                "--target-params",
                str(target),
                "--front",
                "3",
                "--removal-scoring",
                "partway",
                "--finalists",
                "1",
            ]
        )
        == 0
    )
    report = json.loads((run / "report.json").read_text())
    assert report["student"]["params"] <= target
    assert {"option": "--target-params", "limit": target, "value": report["student"]["params"], "held": True} in (
        report["constraints"]
    )
    events = list(read_events(run / "events.jsonl"))
    start = events[0]
    valid = [e for e in events if e["event"] == "candidate" and not e["reason"] and e["paper_reward"] > -1]
    under = [e for e in valid if e["params"] <= target]
    assert under and report["student"]["search_val_accuracy"] == max(e["val_accuracy"] for e in under)
    halfway = start["teacher_params"] * (target / start["teacher_params"]) ** 0.5  # --removal-share 0.5
    assert {e["stage"] for e in valid} == {"remove", "shrink"}
    for e in valid:  # the reward: accuracy under the stage's target, MnasNet's soft form above it
        limit = halfway if e["stage"] == "remove" else target
        factor = 1.0 if e["params"] <= limit else (e["params"] / limit) ** -0.07
        assert e["reward"] == pytest.approx(e["val_accuracy"] / start["teacher_val_accuracy"] * factor)
    front = report["front"]
    assert 1 <= len(front) <= 3 and sum(row["chosen"] for row in front) == 1
    assert [row["params"] for row in front] == sorted(row["params"] for row in front)
    assert all(row["params"] <= target for row in front)
    x = torch.rand(4, 1, 8, 8)
    for row in front:  # each a normal saved model, measured as the report says
        model, spec = load_model(run / row["path"])
        assert sum(p.numel() for p in model.parameters()) == row["params"]
        assert spec.meta["test_accuracy"] == row["test_accuracy"]
        assert set(row["latency_ms"]["torch"]) == {"1", "64"}
        if row["chosen"]:
            student, _ = load_model(run / "student")
            torch.testing.assert_close(model(x), student(x))
    if len(front) > 1:
        assert "## Students at other sizes" in (run / "report.md").read_text()
        assert "other sizes saved: students/" in capsys.readouterr().err


@pytest.mark.slow  # trains a teacher and runs a search
def test_an_unreachable_target_saves_nothing_and_says_how_to_reach_it(teacher, tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "compress",
                "--teacher",
                str(teacher),
                "--data",
                "digits",
                "--out",
                str(run),
                *TINY,
                "--target-params",
                "10",
            ]
        )
        == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "met --target-params 10" in last and "--target-exponent" in last
    assert not (run / "student").exists() and not (run / "students").exists()


@pytest.mark.slow  # trains a teacher and runs a search
def test_finalists_are_fine_tuned_and_the_most_accurate_on_validation_is_the_student(teacher, tmp_path):
    run = tmp_path / "run"
    argv = ["compress", "--teacher", str(teacher), "--data", "digits", "--out", str(run), *TINY]
    assert main([*argv, "--target-params", "60000", "--finalists", "3", "--front", "1", "--seed", "4"]) == 0
    report = json.loads((run / "report.json").read_text())
    finalists = report["finalists"]
    assert len(finalists) == 3 and sum(row["chosen"] for row in finalists) == 1
    assert all(row["params"] <= 60000 for row in finalists)
    searched = [row["search_val_accuracy"] for row in finalists]
    assert searched == sorted(searched, reverse=True)  # the search's order: best first
    chosen = next(row for row in finalists if row["chosen"])
    assert chosen["val_accuracy"] == max(row["val_accuracy"] for row in finalists)
    assert all(math.isfinite(row["val_loss"]) and row["val_loss"] > 0 for row in finalists)  # what breaks ties next
    assert (
        report["student"]["edits"] == chosen["edits"] and report["student"]["test_accuracy"] == chosen["test_accuracy"]
    )
    assert sum(e["event"] == "finetune" for e in read_events(run / "events.jsonl")) == 3  # each once
    assert "## Finalists" in (run / "report.md").read_text()
