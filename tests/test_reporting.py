"""The report's plots and page from synthetic events: exact values of the pure helpers, and what each plot needs."""

import struct

import pytest

from n2n.reporting import plots
from n2n.reporting.html import render_run
from n2n.reporting.rundata import RunView, run_label
from n2n.reporting.tensorboard import update_step


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (fails on anything that is not a PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _candidate(stage, update, rollout, params, acc, keep=(), reason="", cached=False):
    return {
        "event": "candidate",
        "stage": stage,
        "update": update,
        "rollout": rollout,
        "params": params,
        "val_accuracy": acc,
        "reward": -1.0 if reason else acc,
        "reason": reason,
        "cached": cached,
        "edits": {"removed": [], "keep": [list(k) for k in keep]},
        "seconds": 0.1,
    }


def _update(stage, update, probs=(), best=0.5):
    return {
        "event": "update",
        "stage": stage,
        "update": update,
        "reward_mean": 0.1 * update,
        "reward_best": best,
        "baseline": None if update == 0 else 0.05,
        "entropy": 1.0,
        "probs": list(probs),
    }


EVENTS = [
    {"event": "start", "teacher_params": 1000, "teacher_val_accuracy": 0.9},
    _candidate("remove", 0, 0, 400, 0.7),
    _candidate("remove", 0, 1, 0, 0.0, reason="surgery: x"),
    _update("remove", 0, probs=(0.5, 0.6, 0.9), best=0.6),
    _candidate("remove", 1, 0, 300, 0.8),
    _candidate("remove", 1, 1, 400, 0.7, cached=True),
    _update("remove", 1, probs=(0.4, 0.7, 0.95), best=0.7),
    _candidate("shrink", 0, 0, 200, 0.75, keep=[("a", 0.5)]),
    _candidate("shrink", 0, 1, 250, 0.6, keep=[("b", 0.2)]),
    _update("shrink", 0),
    _candidate("shrink", 1, 0, 150, 0.6, keep=[("a", 0.3), ("b", 0.4)]),
    _update("shrink", 1),
]


def test_pareto_front_keeps_only_undominated_points():
    points = [(300, 0.8), (100, 0.5), (200, 0.5), (100, 0.6), (400, 0.7), (500, 0.9), (500, 0.9)]
    assert plots.pareto_front(points) == [(100, 0.6), (300, 0.8), (500, 0.9)]
    assert plots.pareto_front([]) == []


def test_count_label_is_short():
    assert [plots.count_label(v) for v in (950, 20000, 145410, 1.5e6, 2e9)] == ["950", "20k", "145k", "1.5M", "2G"]


def test_valid_candidates_drop_invalid_and_cached_repeats():
    assert [(e["stage"], e["params"]) for e in plots.valid_candidates(EVENTS)] == [
        ("remove", 400),
        ("remove", 300),
        ("shrink", 200),
        ("shrink", 250),
        ("shrink", 150),
    ]


def test_shrink_choices_average_each_update_with_absent_layers_at_one():
    names, updates, matrix = plots.shrink_choices(EVENTS)
    assert names == ["a", "b"] and updates == [1, 2]
    assert matrix == [[pytest.approx(0.75), pytest.approx(0.3)], [pytest.approx(0.6), pytest.approx(0.4)]]


def test_time_parts_in_order_with_the_rest_as_other():
    parts = plots.time_parts({"finetune": 5.0, "candidates": 20.0, "teacher_logits": 1.0, "policy": 0.0}, 30.0)
    assert parts == [
        ("teacher logits", 1.0),
        ("candidate training (distillation)", 20.0),
        ("fine-tune", 5.0),
        ("other (surgery checks, start-up, reports)", 4.0),
    ]
    assert plots.time_parts({}, None) == []


def test_update_step_runs_stage_two_after_stage_one():
    assert [update_step("remove", 3, 10), update_step("shrink", 0, 10), update_step("shrink", 9, 10)] == [3, 10, 19]


def test_run_label_names_the_method_and_seed():
    assert run_label("c1", {"search": "random", "seed": 3}) == "c1 (random search, seed 3)"
    assert run_label("u", {"search": "rl", "baseline": "uniform"}) == "u (uniform baseline, seed 0)"
    assert run_label("r", {}) == "r (n2n, seed 0)"


def test_each_plot_draws_from_its_events_and_only_then():
    assert plots.reward_figure(EVENTS) is not None and plots.reward_figure(EVENTS[:3]) is None
    assert plots.removal_policy_figure(EVENTS, ["x", "y", "z"]) is not None
    assert plots.removal_policy_figure(EVENTS[7:]) is None  # a random search logs no probabilities
    assert plots.shrink_policy_figure(EVENTS) is not None and plots.shrink_policy_figure(EVENTS[:6]) is None
    assert plots.layers_figure([]) is None and plots.time_figure({}) is None
    layers = [
        {"name": "a", "kind": "conv", "teacher_out": 8, "student_out": 4, "status": "shrunk to 50%"},
        {"name": "b", "kind": "conv", "teacher_out": 8, "student_out": 0, "status": "removed"},
    ]
    for fig in (
        plots.layers_figure(layers),
        plots.accuracy_figure([RunView("r", EVENTS)]),
        plots.time_figure({"candidates": 3.0}, 4.0),
    ):
        width, height = png_size(plots.png(fig))
        assert width > 200 and height > 100


def test_a_progress_page_embeds_the_plots_that_can_exist():
    report = {
        "status": "incomplete",
        "teacher": {"params": 1000, "val_accuracy": 0.9},
        "evaluations": 6,
        "resumable": True,
        "stages": {
            "remove": {
                "updates": 2,
                "best": {"edits": {}, "params": 300, "flops": 10, "val_accuracy": 0.8, "reward": 0.7},
            }
        },
    }
    page, images = render_run(RunView("r", EVENTS, report, path="/runs/r"))
    assert set(images) == {"reward", "candidates", "policy_remove", "policy_shrink"}
    assert page.count("data:image/png;base64,") == 4
    assert "n2n compress --resume /runs/r" in page and "3.3x" in page
    assert "<script" not in page


def test_tensorboard_without_its_package_is_a_one_line_config_error(monkeypatch):
    import importlib.util

    from n2n.errors import ConfigError
    from n2n.settings import CompressConfig

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'n2n\[tensorboard\]'"):
        CompressConfig(tensorboard="tb").validate()
    CompressConfig().validate()  # not asked for, not needed
