import pytest

from n2n.search.candidate import candidate_steps


@pytest.mark.parametrize(
    ("steps", "teacher_macs", "student_macs", "max_scale", "expected"),
    [
        (150, 1000, 1000, 4.0, 150),  # as costly as the teacher: the base budget
        (150, 1000, 500, 4.0, 300),  # half the FLOPs: twice the steps, same compute
        (150, 1000, 400, 4.0, 375),
        (150, 1000, 100, 4.0, 600),  # ten times fewer FLOPs: capped at 4x
        (150, 1000, 100, 1.0, 150),  # scaling off
        (150, 1000, 2000, 4.0, 150),  # a wider student never trains less than --steps
        (150, 0, 100, 4.0, 150),  # no reference: fixed budget
    ],
)
def test_candidate_steps_exact(steps, teacher_macs, student_macs, max_scale, expected):
    assert candidate_steps(steps, teacher_macs, student_macs, max_scale) == expected


def _result(seconds, eval_seconds):
    from n2n.search.candidate import CandidateResult
    from n2n.surgery import Edits

    return CandidateResult(Edits(), 1, 1, 0.5, 0.5, "", seconds, 0.0, eval_seconds)


def test_batch_wall_time_is_split_by_the_share_of_scoring():
    from n2n.search.loop import _account

    seconds = {"candidates": 1.0}
    # two workers: 10 s of wall time for 16 s of per-process work, 4 s of it scoring -> a quarter of the wall time
    _account(seconds, 10.0, [_result(8.0, 1.0), _result(8.0, 3.0)])
    assert seconds == {"candidates": pytest.approx(8.5), "evaluation": pytest.approx(2.5)}
    _account(seconds, 2.0, [])  # nothing new was evaluated (all cached): the time counts as training overhead
    assert seconds == {"candidates": pytest.approx(10.5), "evaluation": pytest.approx(2.5)}


def _chain():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip


def test_forward_counts_macs_and_the_activations_of_leaf_modules():
    from n2n.surgery import count_macs, forward_counts

    model = _chain()
    macs, activations = forward_counts(model, (1, 8, 8))
    assert macs == count_macs(model, (1, 8, 8)) == 8 * 64 * 9 + 2 * (8 * 64 * 8 * 9) + 512 * 10
    assert activations == 3 * 512 + 2 * 512 + 512 + 10  # three convs, two ReLUs, the flatten, the linear layer
    assert model.training  # left as it was


def _chain_context(max_step_scale=1.0):
    import torch

    from n2n.search.candidate import CandidateSettings, EvalContext
    from n2n.surgery import analyze, count_macs

    teacher = _chain()
    return EvalContext(teacher=teacher, input_shape=(1, 8, 8), protected=tuple(analyze(teacher, (1, 8, 8)).protected()),
                       x_train=torch.zeros(16, 1, 8, 8), z_train=torch.zeros(16, 10), x_val=torch.zeros(8, 1, 8, 8),
                       y_val=torch.zeros(8, dtype=torch.long), teacher_params=10**6, teacher_val_accuracy=1.0,
                       teacher_macs=count_macs(teacher, (1, 8, 8)),
                       settings=CandidateSettings(steps=4, batch_size=4, lr=0.1, weight_decay=0.0,
                                                  max_step_scale=max_step_scale))  # fmt: skip


def test_parallel_evaluators_start_the_costliest_candidates_first():
    from n2n.search.candidate import costliest_first, evaluation_cost
    from n2n.surgery import Edits

    ctx = _chain_context()
    batch = [Edits.make(keep={"2": 0.25}), Edits(), Edits.make(removed=["2"]), Edits.make(keep={"2": 0.5})]
    cost = [evaluation_cost(ctx, e) for e in batch]
    assert cost[1] > cost[3] > cost[0] and cost[1] > cost[2] > 0  # the teacher-sized student costs most
    order = costliest_first(ctx, batch, workers=2)
    assert sorted(order) == [0, 1, 2, 3] and [cost[i] for i in order] == sorted(cost, reverse=True)
    assert costliest_first(None, batch, workers=4) == [0, 1, 2, 3]  # no more candidates than workers: no estimate
    # equal compute: a student with fewer MACs trains more steps, and costs as much as the teacher
    scaled = _chain_context(max_step_scale=8.0)
    assert evaluation_cost(scaled, batch[3]) > evaluation_cost(ctx, batch[3])
    assert evaluation_cost(ctx, Edits.make(removed=["no-such-layer"])) == 0.0  # fails at once in the worker too


def test_an_update_reports_its_candidates_in_rollout_order():
    """Each new student is evaluated once; the events and rewards stay in rollout order."""
    import torch

    from n2n.search.candidate import CandidateResult
    from n2n.search.loop import SearchContext, StageState, run_update
    from n2n.search.policies import RandomPolicy
    from n2n.search.reinforce import EmaBaseline
    from n2n.search.reward import Constraints
    from n2n.surgery import Edits, analyze

    a = analyze(_chain().eval(), (1, 8, 8))
    seen = []

    class Recorder:
        def evaluate(self, batch):
            seen.append([e.key() for e in batch])
            return [CandidateResult(e, 100, 100, 0.9, 0.5, "", 0.0) for e in batch]

        def close(self):
            pass

    state = StageState("shrink", RandomPolicy("shrink"), None, EmaBaseline(0.8), torch.Generator().manual_seed(3))
    ctx = SearchContext(a, Edits(), Recorder(), {}, Constraints(), tuple(i / 10 for i in range(1, 11)))
    events = []
    results = run_update(state, ctx, rollouts=6, emit=lambda e: events.append(e.to_dict()))
    assert len(seen) == 1 and len(seen[0]) > 2 and len(set(seen[0])) == len(seen[0])
    candidates = [e for e in events if e["event"] == "candidate"]
    assert [e["rollout"] for e in candidates] == list(range(6))
    assert [Edits.from_dict(e["edits"]).key() for e in candidates] == [r.edits.key() for r in results]


@pytest.mark.parametrize("max_draws", [1, 4])
def test_an_update_draws_again_for_students_it_has_seen(max_draws):
    """With max_draws > 1, draws of already-evaluated students are free: the update keeps drawing until it has
    `rollouts` new ones, and every draw (cached ones included) enters the policy gradient."""
    import torch

    from n2n.search.candidate import CandidateResult
    from n2n.search.loop import SearchContext, StageState, run_update
    from n2n.search.policies import RemovalPolicy
    from n2n.search.reinforce import BatchBaseline
    from n2n.search.reward import Constraints
    from n2n.surgery import Edits, analyze

    a = analyze(_chain().eval(), (1, 8, 8))
    evaluated = []

    class Recorder:
        def evaluate(self, batch):
            evaluated.extend(e.key() for e in batch)
            return [CandidateResult(e, 100, 100, 0.9, 0.5 + 0.01 * len(e.removed), "", 0.0) for e in batch]

        def close(self):
            pass

    torch.manual_seed(0)
    policy = RemovalPolicy()
    opt = torch.optim.Adam(policy.parameters(), lr=0.01)
    state = StageState("remove", policy, opt, BatchBaseline(), torch.Generator().manual_seed(3))
    cache = {}
    ctx = SearchContext(a, Edits(), Recorder(), cache, Constraints(), (0.5, 1.0), max_draws=max_draws)
    space = 2 ** int(a.removable().sum())
    redrawn = 0
    for _ in range(3):
        events = []
        before = set(cache)
        results = run_update(state, ctx, rollouts=2, emit=lambda e, events=events: events.append(e.to_dict()))
        draws = [e for e in events if e["event"] == "candidate"]
        new = {r.edits.key() for r in results} - before
        assert len(draws) == len(results) and [e["rollout"] for e in draws] == list(range(len(draws)))
        assert sum(not e["cached"] for e in draws) == len(new)
        if max_draws == 1:
            assert len(draws) == 2
        else:  # new students until 2 are found (the space is large enough), within 4 x 2 draws
            assert 2 <= len(draws) <= 8 and (len(new) == 2 or len(draws) == 8)
        redrawn += len(draws) > 2
    assert redrawn > 0 if max_draws > 1 else redrawn == 0  # this small space repeats itself within 3 updates
    assert len(evaluated) == len(set(evaluated)) == len(cache) and len(cache) < space


def test_search_computes_teacher_logits_on_its_subset_and_the_finetune_the_rest():
    import torch

    from n2n.data import load_data
    from n2n.search.setup import candidate_subset, eval_context, training_logits
    from n2n.settings import CompressConfig
    from n2n.surgery import analyze
    from n2n.train.evaluate import predict_logits

    data = load_data("digits", None, seed=0)
    teacher = _chain().eval()
    cfg = CompressConfig(candidate_examples=300, seed=3).validate()
    ctx = eval_context(teacher, analyze(teacher, data.input_shape), data, cfg)
    subset = candidate_subset(len(data.train), cfg)
    assert ctx.z_train.shape == (300, 10)
    assert torch.equal(ctx.x_train, data.train.x[subset])
    full = predict_logits(teacher, data.train.x)
    torch.testing.assert_close(ctx.z_train, full[subset])
    z = training_logits(ctx, data, cfg)
    assert torch.equal(z[subset], ctx.z_train)  # reused, not recomputed
    torch.testing.assert_close(z, full)  # and every other example filled in
    assert subset.unique().numel() == 300 and not torch.equal(subset, torch.arange(300))  # a seeded draw


def test_a_stage_ranks_its_students_for_the_next_stage():
    """StageState.top: the k best distinct students by reward, ties broken by key so a resumed search picks the same."""
    import torch

    from n2n.search.loop import StageState
    from n2n.search.policies import RandomPolicy
    from n2n.search.reinforce import make_baseline

    state = StageState("remove", RandomPolicy("remove"), None, make_baseline("ema"), torch.Generator())
    state.ranked.update({"c": 0.5, "a": 0.9, "b": 0.9, "d": 0.7})
    assert state.top(3) == ["a", "b", "d"]
    assert state.top(10) == ["a", "b", "d", "c"]
    assert state.top(1) == ["a"]


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_train_student_schedules_run_every_step_and_lower_the_loss(schedule, monkeypatch):
    import torch
    from torch import nn

    from n2n.train.fit import train_student

    lrs = []
    step = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    torch.manual_seed(0)
    x = torch.randn(256, 1, 4, 4)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    soft = teacher(x).detach()
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    first = ((student(x) - soft) ** 2).sum(1).mean().item()
    last = train_student(
        student,
        x,
        soft,
        steps=40,
        batch_size=32,
        lr=0.05,
        weight_decay=0.0,
        generator=torch.Generator().manual_seed(0),
        schedule=schedule,
    )
    assert len(lrs) == 40 and last < first / 10
    if schedule == "onecycle":  # warm-up from lr/25 to the peak at 30% of the steps, then down to ~0
        assert lrs[0] == pytest.approx(0.05 / 25) and max(lrs) == pytest.approx(0.05, rel=0.02)
        assert lrs.index(max(lrs)) in (11, 12) and lrs[-1] < 1e-3
    else:
        assert lrs[0] == pytest.approx(0.05) and lrs == sorted(lrs, reverse=True)


def test_train_student_refuses_an_unknown_schedule():
    import torch
    from torch import nn

    from n2n.train.fit import train_student

    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        train_student(
            nn.Linear(2, 2),
            torch.zeros(4, 2),
            torch.zeros(4, 2),
            steps=1,
            batch_size=2,
            lr=0.1,
            weight_decay=0.0,
            generator=torch.Generator(),
            schedule="step",
        )


def test_candidate_latency_is_measured_in_the_layout_the_student_is_saved_in(monkeypatch):
    """Candidates train in NHWC (--channels-last); their latency is measured as the teacher's and the saved
    student's are, in PyTorch's default NCHW layout, which measured 1.13x faster for a 75K VGG student here."""
    import dataclasses

    import torch
    from torch import nn

    import n2n.search.candidate as candidate
    from n2n.measure import TimingSettings
    from n2n.surgery import Edits
    from n2n.train.compute import Compute

    ctx = _chain_context()
    ctx = dataclasses.replace(
        ctx,
        settings=dataclasses.replace(ctx.settings, compute=Compute("cpu", "fp32", channels_last=True)),
        latency_timing=TimingSettings(warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0),
    )
    layouts = []

    def fake_latency(model, input_shape, batch, timing):
        convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
        layouts.append([w.is_contiguous() for w in convs])
        return 1.5

    trained_layouts = []
    original_train = candidate.train_candidate

    def train_and_look(ctx, student, edits, macs):
        original_train(ctx, student, edits, macs)
        trained_layouts.append([m.weight.is_contiguous(memory_format=torch.channels_last)
                                for m in student.modules() if isinstance(m, nn.Conv2d)])  # fmt: skip

    monkeypatch.setattr(candidate, "latency_ms", fake_latency)
    monkeypatch.setattr(candidate, "train_candidate", train_and_look)
    result = candidate.evaluate_candidate(ctx, Edits.make(keep={"2": 0.5}))
    assert result.valid and result.latency_ms == 1.5
    assert trained_layouts == [[True, True, True]]  # it did train in NHWC
    assert layouts == [[True, True, True]]  # and was timed in NCHW


def test_candidate_latency_in_onnxruntime_and_a_student_it_cannot_run_is_invalid(monkeypatch):
    """--latency-runtime onnxruntime times the student's ONNX export; one that cannot be exported or run there
    cannot meet a latency there, and costs its candidate, not the search."""
    pytest.importorskip("onnxruntime")
    import dataclasses

    import n2n.search.candidate as candidate
    from n2n.measure import TimingSettings
    from n2n.surgery import Edits

    timing = TimingSettings(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.0, runtime="onnxruntime")
    ctx = dataclasses.replace(_chain_context(), latency_timing=timing)
    result = candidate.evaluate_candidate(ctx, Edits.make(keep={"2": 0.5}))
    assert result.valid and 0 < result.latency_ms < 1000

    def no_export(model, input_shape, batch, timing):
        raise RuntimeError("Exporting the operator 'aten::something' to ONNX opset 17 is not supported\nmore")

    monkeypatch.setattr(candidate, "latency_ms", no_export)
    broken = candidate.evaluate_candidate(ctx, Edits.make(keep={"2": 0.5}))
    assert not broken.valid and broken.reward == -1.0
    assert broken.reason == (
        "onnxruntime latency: RuntimeError: Exporting the operator 'aten::something' to ONNX opset 17 is not supported"
    )
