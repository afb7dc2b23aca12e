"""Measured cost: exact ratios, file size as written, latency figures present and positive."""

import pytest
import torch
from torch import nn

from n2n.measure import TimingSettings, measure_cost, speedups, state_dict_bytes, timed_seconds
from n2n.models import ModelSpec, save_model

FAST = TimingSettings(warmup=1, min_repeats=3, max_repeats=5, budget_s=0.05)


def _net(width):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(width * 64, 10)).eval()


def test_speedups_are_teacher_over_student():
    t = {"params": 100, "macs": 1000, "file_bytes": 400, "latency_ms": {"torch": {"1": 2.0, "64": 30.0}}}
    s = {"params": 25, "macs": 100, "file_bytes": 200, "latency_ms": {"torch": {"1": 0.5, "64": 10.0}}}
    assert speedups(t, s) == {
        "params": 4.0,
        "macs": 10.0,
        "file_bytes": 2.0,
        "latency": {"torch": {"1": 4.0, "64": 3.0}},
    }
    assert speedups({**t, "latency_ms": {}}, s)["latency"] == {}


def test_file_size_is_the_saved_weights(tmp_path):
    model = _net(4)
    save_model(model, ModelSpec({"source": "zoo", "name": "x"}, (1, 8, 8), 10), tmp_path)
    assert state_dict_bytes(model) == (tmp_path / "model.safetensors").stat().st_size - _metadata_bytes(tmp_path)


def _metadata_bytes(directory):
    """save_model adds {"format": "n2n-model"} metadata to the header; state_dict_bytes has none."""
    from safetensors.torch import load_file, save

    plain = len(save(load_file(str(directory / "model.safetensors"))))
    return (directory / "model.safetensors").stat().st_size - plain


def test_timed_seconds_repeats_within_bounds():
    calls = []
    timed_seconds(lambda: calls.append(1), TimingSettings(warmup=2, min_repeats=3, max_repeats=7, budget_s=10.0))
    assert len(calls) == 2 + 7
    calls.clear()
    timed_seconds(lambda: calls.append(1), TimingSettings(warmup=0, min_repeats=3, max_repeats=7, budget_s=0.0))
    assert len(calls) == 3


def test_timed_seconds_reports_the_median_or_the_fastest_call():
    import time

    def calls(pauses):
        it = iter(pauses)
        return lambda: time.sleep(next(it))

    pauses = [0.03, 0.0, 0.03, 0.03, 0.03]
    exact = {"warmup": 0, "min_repeats": 5, "max_repeats": 5, "budget_s": 0.0}
    assert timed_seconds(calls(pauses), TimingSettings(**exact)) >= 0.03  # the median is a slow call
    assert timed_seconds(calls(pauses), TimingSettings(**exact, statistic="min")) < 0.01  # the one fast call
    with pytest.raises(ValueError, match="statistic"):
        TimingSettings(statistic="mean")
    with pytest.raises(ValueError, match="runtime must be one of torch, onnxruntime"):
        TimingSettings(runtime="tensorrt")


def test_measure_cost_counts_and_times():
    big, small = _net(8), _net(2)
    cost = measure_cost(big, (1, 8, 8), latency=False)
    assert cost["params"] == 8 * 9 + 8 + 8 * 64 * 10 + 10
    assert cost["macs"] == 8 * 64 * 9 + 8 * 64 * 10 and cost["flops"] == 2 * cost["macs"]
    assert cost["latency_ms"] == {}
    timed = measure_cost(small, (1, 8, 8), timing=FAST)
    assert set(timed["latency_ms"]["torch"]) == {"1", "64"}
    assert all(ms > 0 for per in timed["latency_ms"].values() for ms in per.values())
    pytest.importorskip("onnxruntime")
    assert set(timed["latency_ms"]["onnxruntime"]) == {"1", "64"}
