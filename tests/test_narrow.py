"""--removal-scoring narrowed: every removal is scored after one keep-fraction narrows it to the target."""

import json
import signal
import statistics
import subprocess
import sys
import time

import pytest
import torch

from n2n.cli import main
from n2n.models.zoo import create_model
from n2n.runlog import read_events
from n2n.search.narrow import Fitting, Narrowing, depth_of, size_target, uniform_fraction, uniform_keep, widen_to_target
from n2n.search.policies import ShrinkPolicy
from n2n.search.reward import Target
from n2n.surgery import Edits, analyze, apply_edits, count_macs, count_params


@pytest.mark.parametrize("threshold", [0.137, 0.5, 0.9031])
def test_uniform_fraction_is_the_largest_that_fits(threshold):
    calls = []

    def fits(f):
        calls.append(f)
        return f <= threshold

    f = uniform_fraction(fits, floor=0.1)
    assert f <= threshold < f + 0.004  # 8 bisection steps on [0.1, 1]
    assert len(calls) == 10  # 1, the floor, then the steps


def test_uniform_fraction_at_the_ends():
    assert uniform_fraction(lambda f: True, floor=0.1) == 1.0
    assert uniform_fraction(lambda f: False, floor=0.1) == 0.1  # nothing fits: as narrow as the shrink stage goes


def test_a_latency_target_becomes_the_same_share_of_the_teachers_flops():
    target = size_target(Target(params=5000, latency_ms=2.0), teacher_macs=1000, teacher_latency_ms=8.0)
    assert (target.params, target.flops, target.latency_ms) == (5000, 500.0, None)
    both = size_target(Target(flops=300, latency_ms=2.0), teacher_macs=1000, teacher_latency_ms=8.0)
    assert both.flops == 300  # the tighter of the two
    unknown = size_target(Target(latency_ms=2.0), teacher_macs=1000, teacher_latency_ms=0.0)
    assert not unknown.set  # nothing to narrow to: the removal is scored as it is


def test_uniform_keep_and_depth_of():
    narrowed = Edits.make(["a"], {"b": 0.25, "c": 0.25})
    assert uniform_keep(narrowed) == 0.25 and depth_of(narrowed) == Edits.make(["a"])
    assert uniform_keep(Edits.make(["a"])) is None
    assert uniform_keep(Edits.make([], {"b": 0.25, "c": 0.5})) is None


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return create_model("vgg11", in_channels=1, num_classes=10, input_size=(8, 8), width=0.5).eval()


def narrowing(teacher, target):
    example, shape = torch.rand(2, 1, 8, 8), (1, 8, 8)

    def build(edits):
        return apply_edits(teacher, edits, example, ("classifier",))

    def analyzed(edits):
        return analyze(build(edits), shape, check_removals=False)

    return Narrowing(build, analyzed, target, shape, floor=0.1), build, analyzed(Edits()).layers


def fitting(teacher, limit):
    """A Fitting to ``limit`` parameters, and its build and layers."""
    narrow, build, layers = narrowing(teacher, Target(params=limit))
    return Fitting(build, narrow.analyzed, Target(params=limit), (1, 8, 8), floor=0.1), build, layers


@pytest.mark.parametrize("kind", ["params", "flops"])
def test_a_removal_is_narrowed_as_little_as_meeting_the_target_allows(teacher, kind):
    limit = 20_000 if kind == "params" else 400_000
    narrow, build, layers = narrowing(teacher, Target(**{kind: limit}))
    removal = Edits.make([layers[-2].name, layers[-3].name])  # the two widest convolutions

    def cost(student):
        return count_params(student) if kind == "params" else 2 * count_macs(student, (1, 8, 8))

    assert cost(build(removal)) > limit
    narrowed = narrow(removal)
    f = uniform_keep(narrowed)
    assert narrowed.removed == removal.removed and f is not None and 0.1 < f < 1
    assert {name for name, _ in narrowed.keep} == {layer.name for layer in layers if layer.shrinkable} - set(
        removal.removed
    )
    assert cost(build(narrowed)) <= limit
    wider = removal.then(Edits.make(keep={name: min(1.0, 1.1 * f) for name, _ in narrowed.keep}))
    assert cost(build(wider)) > limit  # 10% wider no longer meets it
    assert narrow(removal) is narrowed  # once per removal


def test_a_removal_that_meets_the_target_is_not_narrowed_and_a_broken_one_is_left_to_fail(teacher):
    narrow, build, layers = narrowing(teacher, Target(params=10**9))
    removal = Edits.make([layers[0].name])
    assert narrow(removal) == removal
    broken = Edits.make(["no.such.layer"])
    assert narrow(broken) == broken  # its evaluation gives the reason


def test_a_student_under_its_target_is_widened_in_proportion_as_far_as_the_target_allows(teacher):
    _, build, layers = narrowing(teacher, Target())
    names = [layer.name for layer in layers if layer.shrinkable]
    small = Edits.make([names[0]], {names[4]: 0.2, names[5]: 0.4, names[6]: 0.6})  # the widest layers
    limit = int(count_params(build(small)) * 1.2)

    def fits(params, macs, latency_ms):
        return params <= limit

    grown = widen_to_target(small, build, fits, (1, 8, 8))
    assert grown is not None and grown.removed == small.removed
    keep, before = dict(grown.keep), dict(small.keep)
    scale = keep[names[4]] / 0.2
    assert scale > 1
    for name, f in before.items():  # one factor for every layer, capped at 1 (a layer at 1 leaves keep)
        assert keep.get(name, 1.0) == pytest.approx(min(1.0, f * scale), abs=2e-4)
    assert count_params(build(small)) < count_params(build(grown)) <= limit
    wider = Edits.make(small.removed, {name: min(1.0, f * scale * 1.05) for name, f in before.items()})
    assert count_params(build(wider)) > limit  # 5% wider no longer fits


def test_a_student_that_cannot_grow_is_not_widened(teacher):
    _, build, layers = narrowing(teacher, Target())
    names = [layer.name for layer in layers if layer.shrinkable]
    small = Edits.make([], {names[1]: 0.5})
    assert (
        widen_to_target(small, build, lambda params, macs, ms: params <= count_params(build(small)), (1, 8, 8)) is None
    )
    assert widen_to_target(Edits.make([names[0]]), build, lambda params, macs, ms: True, (1, 8, 8)) is None  # no widths


@pytest.mark.parametrize("scale", [0.5, 2.0])  # a width choice over its target, and one under it
def test_a_width_choice_is_scaled_in_proportion_to_its_target(teacher, scale):
    _, build, layers = narrowing(teacher, Target())
    names = [layer.name for layer in layers if layer.shrinkable]
    choice = Edits.make([names[0]], {names[2]: 0.2, names[4]: 0.4, names[5]: 0.6, names[6]: 0.3})
    limit = int(count_params(build(choice)) * scale)
    fitted = fitting(teacher, limit)[0](choice)
    keep = dict(fitted.keep)
    before = {name: dict(choice.keep).get(name, 1.0) for name in names[1:]}  # a layer kept whole is scaled too
    assert fitted.removed == choice.removed
    factor = keep[names[2]] / 0.2
    assert factor < 1 if scale < 1 else factor > 1
    for name, f in before.items():  # one factor for every layer, capped at 1 (a layer at 1 leaves keep)
        assert keep.get(name, 1.0) == pytest.approx(min(1.0, f * factor), abs=2e-3)
    assert scale > 1 or keep[names[1]] < 1  # kept whole by the choice, narrowed with the others
    assert count_params(build(fitted)) <= limit
    wider = Edits.make(choice.removed, {name: min(1.0, f * factor * 1.1) for name, f in before.items()})
    assert count_params(build(wider)) > limit  # 10% wider no longer meets it


def test_a_width_choice_that_cannot_meet_its_target_is_left_at_the_floor(teacher):
    _, build, layers = narrowing(teacher, Target())
    names = [layer.name for layer in layers if layer.shrinkable]
    choice = Edits.make([], {names[2]: 0.2, names[5]: 0.8})
    fit = fitting(teacher, 10)[0]
    # the narrowest at the floor, the others in proportion (those the choice kept whole at half)
    assert dict(fit(choice).keep) == {name: {names[2]: 0.1, names[5]: 0.4}.get(name, 0.5) for name in names}
    broken = Edits.make(["no.such.layer"], {names[2]: 0.2})
    assert fit(broken) == broken  # its evaluation gives the reason


def test_a_centred_shrink_policy_starts_at_its_centre():
    policy = ShrinkPolicy(centre=0.3)
    probs = torch.softmax(policy.head.bias, 0)
    assert policy.choices[int(probs.argmax())] == 0.3
    assert probs[policy.choices.index(1.0)] < 0.01
    default = torch.softmax(ShrinkPolicy().head.bias, 0)
    assert ShrinkPolicy().choices[int(default.argmax())] == 1.0


SEARCH = [
    "--data",
    "digits",
    "--workers",
    "1",
    "--updates",
    "3",
    "--rollouts",
    "3",
    "--steps",
    "10",
    "--candidate-examples",
    "300",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "30",
    "--seed",
    "2",
    "--target-params",
    "30000",
    "--removal-scoring",
    "narrowed",
    "--front",
    "1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    argv = ["train-teacher", "--arch", "vgg11", "--width", "0.25", "--data", "digits", "--epochs", "3", "--out"]
    assert main([*argv, str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("narrowed") / "run"
    assert main(["compress", "--teacher", str(trained), "--out", str(out), *SEARCH]) == 0
    return out


@pytest.mark.slow  # trains a teacher and runs a search
def test_a_narrowed_search_compares_removals_at_the_target_and_shrinks_the_best_removal(run):
    events = list(read_events(run / "events.jsonl"))
    start = events[0]
    candidates = [e for e in events if e["event"] == "candidate" and not e["reason"]]
    removals = [e for e in candidates if e["stage"] == "remove"]
    assert removals and all(e["params"] <= 30000 for e in removals if uniform_keep(Edits.from_dict(e["edits"])))
    for e in candidates:  # scored at the run's own target in both stages: no nearer removal target
        factor = 1.0 if e["params"] <= 30000 else (e["params"] / 30000) ** -0.07
        assert e["reward"] == pytest.approx(e["val_accuracy"] / start["teacher_val_accuracy"] * factor)
    best = max(removals, key=lambda e: e["reward"])  # the first of equal rewards, as the stage keeps it
    shrinks = [e for e in candidates if e["stage"] == "shrink"]
    assert shrinks and all(e["edits"]["removed"] == best["edits"]["removed"] for e in shrinks)
    report = json.loads((run / "report.json").read_text())
    assert report["student"]["params"] <= 30000


def _comparable(run):
    return [
        {k: v for k, v in e.items() if k not in {"seconds", "wall_time_s"}} for e in read_events(run / "events.jsonl")
    ]


@pytest.mark.slow  # two searches
def test_a_narrowed_search_killed_in_its_shrink_stage_resumes_to_the_same_student(trained, run, tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "n2n.cli", "compress", "--teacher", str(trained), "--out", str(out), *SEARCH]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        log = out / "events.jsonl"
        if log.exists() and any(e["event"] == "update" and e["stage"] == "shrink" for e in read_events(log)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["compress", "--resume", str(out)]) == 0
    assert _comparable(out) == _comparable(run)  # the shrink policy starts centred again after the resume
    assert (out / "student" / "model.safetensors").read_bytes() == (run / "student" / "model.safetensors").read_bytes()


@pytest.mark.slow  # a search
def test_widen_fine_tunes_the_best_student_grown_to_the_target_as_one_more_finalist(trained, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "compress",
                "--teacher",
                str(trained),
                "--out",
                str(out),
                *SEARCH,
                "--finalists",
                "1",
                "--shrink-scoring",
                "sampled",  # a fitted choice is at the target already: nothing to widen
                "--widen",
                "--fractions",
                "0.25,0.5,1",
                "--stages",
                "shrink",
                "--target-params",
                "320000",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    searched, grown = report["finalists"]
    assert not searched["widened"] and grown["widened"]
    assert searched["params"] < grown["params"] <= 320000
    assert dict(grown["edits"]["keep"]).keys() <= dict(searched["edits"]["keep"]).keys()  # the same layers, wider
    assert all(f >= dict(searched["edits"]["keep"])[name] for name, f in grown["edits"]["keep"])
    chosen = max((searched, grown), key=lambda row: row["val_accuracy"])  # ties: the search's own
    assert chosen["chosen"] and report["student"]["params"] == chosen["params"]
    assert "(widened)" in (out / "report.md").read_text()


@pytest.mark.slow  # a search
def test_a_search_with_a_target_scores_every_width_choice_at_the_target(trained, run, tmp_path):
    """The default (--shrink-scoring fitted) against the width choices as sampled, on the same seed."""

    def shrinks(out):
        events = read_events(out / "events.jsonl")
        return [e for e in events if e["event"] == "candidate" and e["stage"] == "shrink" and not e["reason"]]

    out = tmp_path / "run"
    assert main(["compress", "--teacher", str(trained), "--out", str(out), *SEARCH, "--shrink-scoring", "sampled"]) == 0
    fitted, sampled = shrinks(run), shrinks(out)
    assert fitted and all(e["params"] <= 30000 for e in fitted)
    assert statistics.median(e["params"] for e in fitted) > 0.85 * 30000  # scaled up to it, not only down
    assert any(not 0.85 * 30000 < e["params"] <= 30000 for e in sampled)  # as sampled: over it, or well under
    # as sampled, the widths come from --fractions, of the removal as removed (not of its narrowed copy)
    assert all(f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9) for e in sampled for _, f in e["edits"]["keep"])
    removals = [e for e in _comparable(out) if e.get("stage") == "remove"]
    assert removals == [e for e in _comparable(run) if e.get("stage") == "remove"]  # stage 1 is the same
    assert json.loads((run / "report.json").read_text())["student"]["params"] <= 30000


def test_width_choices_are_fitted_only_to_a_target():
    from n2n.search.setup import shrink_fitting
    from n2n.settings import CompressConfig

    assert CompressConfig().shrink_scoring == "fitted"
    assert shrink_fitting(CompressConfig(), None, None, None) is None  # no target: scored as sampled
    assert shrink_fitting(CompressConfig(shrink_scoring="sampled", target_params=1000), None, None, None) is None


def test_count_calls_counts_what_computes_once_per_call():
    from torch import nn

    from n2n.surgery import count_calls
    from n2n.surgery.repair import Bypass

    relu = nn.ReLU(inplace=True)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Identity(), relu, Bypass(), nn.Dropout(), nn.Conv2d(4, 4, 3), relu)
    model.train()
    assert count_calls(model, (1, 8, 8)) == 4  # two convolutions, the in-place ReLU twice; no stand-ins
    assert model.training  # left as it was


def test_a_latency_model_fitted_on_two_widths_recovers_a_cost_per_call_and_per_mac(teacher):
    from n2n.measure import LatencyModel, fit_latency_model
    from n2n.surgery import count_calls

    shape = (1, 8, 8)
    _, build, layers = narrowing(teacher, Target())
    narrow = build(Edits.make(keep={layer.name: 0.25 for layer in layers if layer.shrinkable}))
    truth = LatencyModel(ms_per_call=0.01, ms_per_mac=2e-7)
    model = fit_latency_model(teacher, narrow, shape, truth(teacher, shape), truth(narrow, shape))
    assert model.ms_per_call == pytest.approx(0.01) and model.ms_per_mac == pytest.approx(2e-7)
    shallow = build(Edits.make([layers[1].name]))  # a layer removed: fewer calls
    assert count_calls(shallow, shape) < count_calls(teacher, shape)
    assert model(shallow, shape) == pytest.approx(truth(shallow, shape))
    # timings that fall with width faster than MACs do cannot make either cost negative
    assert fit_latency_model(teacher, narrow, shape, 1.0, 2.0).ms_per_mac == 0.0


def test_a_latency_target_stays_one_with_a_latency_model_and_removals_are_narrowed_to_its_prediction(teacher):
    from n2n.measure import LatencyModel

    shape = (1, 8, 8)
    model = LatencyModel(ms_per_call=0.01, ms_per_mac=1e-6)
    target = size_target(Target(params=10**6, latency_ms=0.5), teacher_macs=1000, teacher_latency_ms=8.0, latency=model)
    assert (target.params, target.flops, target.latency_ms) == (10**6, None, 0.5)  # no conversion to FLOPs
    _, build, layers = narrowing(teacher, Target())
    narrow = Narrowing(build, lambda e: analyze(build(e), shape, check_removals=False), target, shape, 0.1, model)
    removal = Edits.make([layers[-2].name])
    assert model(build(removal), shape) > 0.5
    narrowed = narrow(removal)
    f = uniform_keep(narrowed)
    assert f is not None and 0.1 < f < 1
    assert model(build(narrowed), shape) <= 0.5
    wider = removal.then(Edits.make(keep={name: min(1.0, 1.1 * f) for name, _ in narrowed.keep}))
    assert model(build(wider), shape) > 0.5  # 10% wider no longer meets it


def test_a_search_with_a_latency_target_fits_its_widths_to_the_latency_its_model_predicts():
    from n2n.data import load_data
    from n2n.search.setup import eval_context, removal_narrowing, shrink_fitting
    from n2n.settings import CompressConfig

    data = load_data("digits", None, seed=0)
    torch.manual_seed(0)
    teacher = create_model("vgg11", in_channels=1, num_classes=10, input_size=(8, 8), width=0.5).eval()
    analysis = analyze(teacher, data.input_shape)
    plain = eval_context(teacher, analysis, data, CompressConfig(candidate_examples=100, target_params=5000).validate())
    assert plain.latency_model is None  # nothing timed, nothing to predict
    cfg = CompressConfig(candidate_examples=100, target_latency_ms=0.5 * 10**9).validate()  # met by anything
    ctx = eval_context(teacher, analysis, data, cfg)
    model = ctx.latency_model
    assert model is not None and model.ms_per_call > 0
    assert model(teacher, data.input_shape) == pytest.approx(ctx.teacher_latency_ms)  # through the teacher's time
    target = 0.6 * ctx.teacher_latency_ms  # a tighter target, on the same fitted model
    tight = CompressConfig(candidate_examples=100, target_latency_ms=target).validate()
    fitting = shrink_fitting(tight, ctx, analysis, lambda e: analyze(build_student_of(ctx, e), data.input_shape))
    assert fitting.target.latency_ms == target
    shrinkable = [layer.name for layer in analysis.layers if layer.shrinkable]
    fitted = fitting(Edits.make(keep={name: 0.5 for name in shrinkable}))
    assert model(build_student_of(ctx, fitted), data.input_shape) <= target
    assert removal_narrowing(tight, ctx, analysis, fitting.analyzed).target.latency_ms == target


def build_student_of(ctx, edits):
    from n2n.search.candidate import build_student

    return build_student(ctx, edits)


@pytest.mark.slow  # a search
def test_a_latency_target_run_records_the_model_it_fits_candidates_with(trained, run, tmp_path):
    out = tmp_path / "run"
    search = [*SEARCH[: SEARCH.index("--target-params")], "--updates", "1", "--target-latency-ms", "1000"]
    assert main(["compress", "--teacher", str(trained), "--out", str(out), *search]) == 0
    start = next(read_events(out / "events.jsonl"))
    assert start["latency_model"]["ms_per_call"] > 0 and start["latency_model"]["ms_per_mac"] >= 0
    assert "latency_model" not in next(read_events(run / "events.jsonl"))  # a parameter target times nothing


def test_what_candidates_measure_scales_the_latency_the_narrowing_aims_at(teacher):
    from n2n.measure import LatencyModel
    from n2n.search.candidate import CandidateResult

    shape = (1, 8, 8)
    model = LatencyModel(ms_per_call=0.01, ms_per_mac=1e-6)
    _, build, layers = narrowing(teacher, Target())
    removal, deeper = Edits.make([layers[-2].name]), Edits.make([])
    counted = model(build(removal), shape)
    narrow = Narrowing(build, None, Target(latency_ms=0.5), shape, 0.1, model)
    result = CandidateResult(removal, 1000, 1000, 0.9, 0.9, "", 1.0, latency_ms=1.3 * counted)
    invalid = CandidateResult(removal, 0, 0, 0.0, -1.0, "broken", 1.0, latency_ms=9 * counted)
    narrow.observe([result, invalid])
    assert model(build(removal), shape) == pytest.approx(1.3 * counted)  # the invalid one taught nothing
    narrow.observe([result._replace(latency_ms=1.1 * counted)] * 2)
    assert model(build(removal), shape) == pytest.approx(1.2 * counted)  # the upper quartile of 1.1, 1.1, 1.3
    # another depth borrows those ratios until three students of its own depth have been measured
    counted_deeper = model.counts(build(deeper), shape)[1]
    assert model(build(deeper), shape) == pytest.approx(1.2 * counted_deeper)
    ratios = (2.0, 2.0)
    narrow.observe([result._replace(edits=deeper, latency_ms=r * counted_deeper) for r in ratios])
    assert model(build(deeper), shape) == pytest.approx(2.0 * counted_deeper)  # 1.1, 1.1, 1.3, 2, 2 pooled
    narrow.observe([result._replace(edits=deeper, latency_ms=0.5 * counted_deeper)])
    assert model(build(deeper), shape) == pytest.approx(2.0 * counted_deeper)  # its own: 0.5, 2, 2
    narrow.observe([result._replace(edits=deeper, latency_ms=0.5 * counted_deeper)] * 3)
    assert model(build(deeper), shape) == pytest.approx(1.625 * counted_deeper)  # 0.5 x4, 2 x2: at 3.75 of 5
    assert model(build(removal), shape) == pytest.approx(1.2 * counted)  # its depth keeps its own
    untimed = Narrowing(build, None, Target(params=10**6), shape, 0.1, model)
    untimed.observe([result])  # a target without latency has nothing to calibrate
    assert sum(map(len, model.ratios.values())) == 9
