"""The CUDA path: candidate training under autocast, the fine-tune, teacher training, export and resume on a GPU.

Skipped where no CUDA device exists (CI); ``scripts/gpu-check`` runs them on a lent GPU machine (``-m cuda``).
"""

import json

import pytest
import torch

from n2n.cli import main

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

TINY = [
    "--updates",
    "2",
    "--rollouts",
    "3",
    "--steps",
    "10",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "50",
    "--workers",
    "1",
    "--device",
    "cuda",
]


@pytest.fixture(scope="module")
def gpu_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "teacher"
    assert (
        main(
            [
                "train-teacher",
                "--arch",
                "vgg11",
                "--width",
                "0.25",
                "--data",
                "digits",
                "--epochs",
                "8",
                "--device",
                "cuda",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_teacher_trains_on_the_gpu_past_chance(gpu_teacher):
    spec = json.loads((gpu_teacher / "spec.json").read_text())
    assert spec["meta"]["val_accuracy"] > 0.5


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_search_and_finetune_under_autocast_then_export(gpu_teacher, tmp_path, precision):
    run = tmp_path / "run"
    assert main(["compress", "--teacher", str(gpu_teacher), "--out", str(run), "--precision", precision, *TINY]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["student"]["test_accuracy"] > 0.3
    assert main(["export", str(run / "student"), "--format", "onnx"]) == 0
    assert (run / "student" / "model.onnx").is_file()


def test_a_gpu_search_resumes_to_the_same_student(gpu_teacher, tmp_path, monkeypatch):
    import n2n.compress
    from n2n.runlog import read_events

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["compress", "--teacher", str(gpu_teacher), "--out", str(whole), "--seed", "3", *TINY]) == 0
    original, calls = n2n.search.loop.run_update, []

    def interrupt_at_the_third_update(*args, **kwargs):  # Ctrl-C after two checkpointed updates
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(n2n.search.loop, "run_update", interrupt_at_the_third_update)
    assert main(["compress", "--teacher", str(gpu_teacher), "--out", str(cut), "--seed", "3", *TINY]) == 130
    monkeypatch.setattr(n2n.search.loop, "run_update", original)
    assert main(["compress", "--resume", str(cut)]) == 0

    def comparable(run):
        return [
            {k: v for k, v in e.items() if k not in ("seconds", "wall_time_s")}
            for e in read_events(run / "events.jsonl")
        ]

    assert comparable(cut) == comparable(whole)
    assert (cut / "student" / "model.safetensors").read_bytes() == (
        whole / "student" / "model.safetensors"
    ).read_bytes()


def test_a_latency_capped_search_on_the_gpu_times_its_students_on_the_host(gpu_teacher, tmp_path):
    from n2n.runlog import read_events

    run = tmp_path / "run"
    assert main(["compress", "--teacher", str(gpu_teacher), "--out", str(run), "--max-latency-ms", "1000", *TINY]) == 0
    timed = [e["latency_ms"] for e in read_events(run / "events.jsonl") if e.get("event") == "candidate"]
    assert timed and all(ms > 0 for ms in timed)  # a CUDA student timed on a CPU input would have failed instead
