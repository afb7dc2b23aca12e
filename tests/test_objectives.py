"""Budgets in other units: a --objective latency search end to end, the cost section, old checkpoints."""

import json

import pytest

from n2n.cli import evaluate_cmd, main
from n2n.runlog import read_events
from n2n.search.checkpoint import result_from_dict, result_to_dict
from n2n.search.reward import reward
from n2n.surgery import Edits

TINY = [
    "--workers",
    "1",
    "--updates",
    "2",
    "--rollouts",
    "3",
    "--steps",
    "5",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "5",
    "--candidate-examples",
    "100",
    "--stages",
    "remove",
]


@pytest.mark.slow
def test_latency_objective_search_end_to_end(tmp_path):
    teacher = tmp_path / "teacher"
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
                str(teacher),
            ]
        )
        == 0
    )
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
                "--objective",
                "latency",
                "--max-latency-ms",
                "1000",
            ]
        )
        == 0
    )
    events = list(read_events(run / "events.jsonl"))
    start = events[0]
    assert start["objective"] == "latency" and start["teacher_cost"] > 0
    valid = [e for e in events if e["event"] == "candidate" and not e["reason"]]
    assert valid
    for e in valid:  # the reward's C is measured in milliseconds: R = C(2 - C) * A_s / A_t with C = 1 - ms / ms_t
        assert e["latency_ms"] > 0
        assert e["paper_reward"] == pytest.approx(
            reward(e["val_accuracy"], start["teacher_val_accuracy"], e["latency_ms"], start["teacher_cost"])
        )
    report = json.loads((run / "report.json").read_text())
    cost = report["cost"]
    assert cost["teacher"]["params"] == report["teacher"]["params"]
    assert cost["student"]["params"] == report["student"]["params"]
    assert cost["speedup"]["params"] == pytest.approx(report["compression"])
    assert set(cost["student"]["latency_ms"]["torch"]) == {"1", "64"}
    assert cost["speedup"]["latency"]["torch"]["1"] == pytest.approx(
        cost["teacher"]["latency_ms"]["torch"]["1"] / cost["student"]["latency_ms"]["torch"]["1"]
    )
    assert cost["student"]["file_bytes"] == pytest.approx(
        (run / "student" / "model.safetensors").stat().st_size, rel=0.01
    )
    assert "## Cost (measured on this machine)" in (run / "report.md").read_text()
    compared = evaluate_cmd(str(run / "student"), "digits", None, teacher=str(run / "teacher"))
    assert compared["speedup"]["params"] == pytest.approx(report["compression"])
    assert compared["teacher"]["params"] == report["teacher"]["params"]
    alone = evaluate_cmd(str(run / "student"), "digits", None, latency=False)
    assert alone["latency_ms"] == {} and "speedup" not in alone


def test_results_of_older_checkpoints_load_without_latency():
    record = {
        "edits": Edits.make(["a"], {}).to_dict(),
        "params": 5,
        "macs": 7,
        "val_accuracy": 0.5,
        "reward": 0.1,
        "reason": "",
        "seconds": 1.0,
    }
    result = result_from_dict(record)
    assert result.latency_ms == 0.0 and result.params == 5
    assert result_from_dict(result_to_dict(result._replace(latency_ms=2.5))).latency_ms == 2.5
