"""Devices, precision and memory format of student training, and the diverging-loss early stop."""

import contextlib
import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from n2n.errors import ConfigError
from n2n.settings import CompressConfig
from n2n.surgery.transforms import folded, relus_in_place
from n2n.train.compute import (
    DIVERGE_PATIENCE,
    HUGE_PAGES_ENV,
    Compute,
    divergence_limit,
    divergence_streak,
    first_divergence,
    resolve_device,
    resolve_precision,
)
from n2n.train.evaluate import accuracy, predict_logits
from n2n.train.fit import Diverged, train_student
from n2n.train.losses import mse_distill_loss


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_device_falls_back_to_cpu(no_gpu):
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"


def test_auto_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_an_unavailable_device_is_a_config_error(no_gpu, name):
    with pytest.raises(ConfigError, match=f"--device {name}: no {name.upper()} device is available"):
        resolve_device(name)
    with pytest.raises(ConfigError, match="use --device cpu"):
        CompressConfig(device=name).validate()


def test_unknown_device_and_precision_are_config_errors():
    with pytest.raises(ConfigError, match="--device must be one of auto, cpu, cuda, mps"):
        CompressConfig(device="tpu").validate()
    with pytest.raises(ConfigError, match="--precision must be one of auto, fp32, bf16, fp16"):
        CompressConfig(precision="fp8").validate()


def test_precision_auto_is_fp32_off_cuda_and_explicit_values_stay(no_gpu):
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "mps") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert CompressConfig().compute() == Compute("cpu", "fp32", True)
    assert CompressConfig(precision="bf16", channels_last=True).compute() == Compute("cpu", "bf16", True)


def test_divergence_limit_uses_the_larger_reference():
    assert divergence_limit(2.0, 0.5, factor=10.0) == 20.0
    assert divergence_limit(1e-6, 3.0, factor=10.0) == 30.0  # a near-exact inherited student is not stopped by noise


def test_divergence_streak_counts_steps_in_a_row_above_the_limit():
    assert divergence_streak(0, 5.0, 10.0) == 0
    assert divergence_streak(2, 11.0, 10.0) == 3
    assert divergence_streak(3, 10.0, 10.0) == 0  # at the limit is not above it
    assert divergence_streak(1, math.inf, 10.0) == 2
    assert divergence_streak(1, math.nan, 10.0) == 2


def test_first_divergence_on_a_toy_loss_sequence():
    losses = [1.0, 12.0, 13.0, 2.0, 11.0, 20.0, 30.0, 40.0, 50.0, 1.0]
    assert first_divergence(losses, limit=10.0, patience=3) == 6  # steps 4, 5, 6 are above 10; 1-2 were interrupted
    assert first_divergence(losses, limit=10.0, patience=5) == 8
    assert first_divergence(losses, limit=10.0, patience=6) is None
    assert first_divergence(losses, limit=100.0, patience=1) is None


def _toy(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.randn(40, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    z = torch.randn(40, 3, generator=torch.Generator().manual_seed(2))
    return model, x, z


def test_a_diverging_loss_stops_training_at_the_rule_s_step():
    model, x, z = _toy()
    losses = [1.0, 2.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0]
    null = 4.0  # the loss of an all-zero output: the reference is max(1.0, 4.0), so the limit is 40
    calls = iter(losses)

    def scripted(out, target):  # the loss values of a student that blows up after two steps
        return out.sum() * 0 + (null if not out.any() else next(calls))

    expected = first_divergence(losses, divergence_limit(losses[0], null), DIVERGE_PATIENCE)
    assert expected == 6
    with pytest.raises(Diverged, match=f"for {DIVERGE_PATIENCE} steps in a row at step {expected}"):
        train_student(
            model,
            x,
            z,
            steps=10,
            batch_size=8,
            lr=1e-3,
            weight_decay=0.0,
            generator=torch.Generator().manual_seed(0),
            loss_fn=scripted,
        )


def test_default_training_is_exactly_the_plain_adam_loop():
    """The CPU fp32 path (flags off) gives bit-identical weights to the loop it replaced."""
    model, x, z = _toy()
    reference = _toy()[0]
    train_student(
        model, x, z, steps=7, batch_size=16, lr=1e-2, weight_decay=1e-4, generator=torch.Generator().manual_seed(3)
    )
    gen = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / 7)))
    order, pos = torch.randperm(40, generator=gen), 0
    for _ in range(7):
        if pos + 16 > 40:
            order, pos = torch.randperm(40, generator=gen), 0
        idx = order[pos : pos + 16]
        pos += 16
        loss = mse_distill_loss(reference(x[idx]), z[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_channels_last_and_bf16_train_the_same_model_closely_and_deterministically():
    results = {}
    for compute in (Compute(), Compute(channels_last=True), Compute(precision="bf16"), Compute(precision="bf16")):
        model, x, z = _toy()
        loss = train_student(
            model,
            x,
            z,
            steps=6,
            batch_size=16,
            lr=1e-2,
            weight_decay=0.0,
            generator=torch.Generator().manual_seed(0),
            compute=compute,
        )
        results.setdefault(compute, []).append((loss, predict_logits(model, x, compute=compute)))
    fp32 = results[Compute()][0][1]
    assert fp32.dtype == torch.float32
    assert torch.allclose(results[Compute(channels_last=True)][0][1], fp32, atol=1e-4)
    (loss_a, bf16_a), (loss_b, bf16_b) = results[Compute(precision="bf16")]
    assert loss_a == loss_b and torch.equal(bf16_a, bf16_b)  # bf16 on CPU is deterministic
    assert bf16_a.dtype == torch.float32 and torch.allclose(bf16_a, fp32, atol=0.1)


def test_evaluation_leaves_a_model_on_another_device_untouched(monkeypatch):
    model, x, _ = _toy()
    y = torch.zeros(40, dtype=torch.long)
    acc = accuracy(model, x, y, batch_size=7, compute=Compute(channels_last=True))
    assert acc == accuracy(model, x, y, batch_size=40)
    assert next(model.parameters()).is_contiguous()  # the caller's model kept its layout


def test_inference_batches_default_to_the_device_s_size(monkeypatch):
    """Scoring batches default to a cache-sized 128 on CPUs and 1024 elsewhere; the batch size never changes the
    logits beyond float rounding, and an explicit --eval-batch-size is used as given."""
    assert Compute().eval_batch_size == 128 and Compute("cuda").eval_batch_size == 1024
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()
    x = torch.randn(300, 1, 8, 8)
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda b: seen.append(b.shape[0]) or forward(b))
    default = predict_logits(model, x)
    assert seen == [128, 128, 44]
    seen.clear()
    whole = predict_logits(model, x, batch_size=1024)
    assert seen == [300]
    torch.testing.assert_close(default, whole)
    assert CompressConfig().validate().eval_batch_size is None
    with pytest.raises(ConfigError, match="--eval-batch-size must be a positive integer"):
        CompressConfig(eval_batch_size=0).validate()


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))

    def forward(self, x):
        return self.body(x) if x.sum() > -1e9 else -self.body(x)  # data-dependent branch: torch.fx cannot trace it


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv2d(1, 1, 3, padding=1), nn.BatchNorm2d(1), nn.BatchNorm2d(1)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        return self.head(self.bn2(self.conv(self.bn1(self.conv(x)))).flatten(1))  # one conv, two batch norms


def test_scoring_folds_batch_norms_into_a_copy_and_keeps_the_argmax(monkeypatch):
    """accuracy() scores with conv+BN folded (a faster copy); the caller's model keeps its layers, mode and
    logits, the folded logits agree to float rounding, and a model fx cannot trace is scored unfolded."""
    import n2n.train.evaluate as evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    x = torch.randn(200, 1, 8, 8)
    with torch.no_grad():
        model(x * 3 + 1)  # running statistics far from the initial (0, 1), so folding changes the weights
    before = [p.clone() for p in model.state_dict().values()]
    twin = folded(model)
    assert model.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in twin.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(a, b) for a, b in zip(before, model.state_dict().values(), strict=True))
    plain = predict_logits(model, x)
    torch.testing.assert_close(predict_logits(model, x, fold_bn=True), plain, atol=1e-5, rtol=1e-5)
    assert not torch.equal(twin.get_submodule("0").weight, model.get_submodule("0").weight)
    y = plain.argmax(dim=1)
    calls = []
    monkeypatch.setattr(evaluate, "folded", lambda m: calls.append(m) or folded(m))
    assert accuracy(model, x, y) == 1.0 and calls == [model]
    relu = nn.ReLU()  # one activation module applied twice, as in a ResNet block: still folded
    block = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        relu,
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        relu,
        nn.Flatten(),
        nn.Linear(256, 3),
    )
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded(block).modules())
    for odd in (_Untraceable(), _Shared()):
        with torch.no_grad():
            odd.train()(x * 3 + 1)
        assert folded(odd) is None
        assert accuracy(odd, x, predict_logits(odd, x).argmax(dim=1)) == 1.0


class _Skip(nn.Module):
    """conv-BN-ReLU (may work in place); a ReLU whose input also feeds a skip (may not); ReLU after ReLU (may not);
    one ReLU module called twice (may not); a linear-ReLU (may)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.act2, self.act3 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.ReLU()
        self.shared = nn.ReLU()
        self.fc, self.act4, self.head = nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 3)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        g = self.conv2(h)
        h = self.act3(self.act2(g)) + g  # act2's input feeds the skip; act3 follows a ReLU
        h = self.shared(self.shared(h))
        return self.head(self.act4(self.fc(h.flatten(1))))


def test_relus_work_in_place_only_where_safe_and_training_is_unchanged(monkeypatch):
    """train_student lets a ReLU overwrite its input only after a conv, linear or batch norm that nothing else reads
    (and only a ReLU called once); the flags come back as they were, and the trained weights are bit-identical."""
    torch.manual_seed(0)
    model = torch.fx.symbolic_trace(_Skip())
    reference = copy.deepcopy(model)
    with relus_in_place(model) as count:
        assert count == 2
        assert model.act.inplace and model.act4.inplace
        assert not (model.act2.inplace or model.act3.inplace or model.shared.inplace)
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    with relus_in_place(_Skip()) as count:  # not traced: nothing changes
        assert count == 0
    x, z = torch.randn(40, 1, 8, 8), torch.randn(40, 3)
    seen = []
    model.act.register_forward_hook(lambda m, i, o: seen.append(m.inplace))

    def train(m):
        train_student(
            m,
            x,
            z,
            steps=5,
            batch_size=16,
            lr=1e-2,
            weight_decay=1e-4,
            generator=torch.Generator().manual_seed(1),
            compute=Compute(channels_last=True),
        )

    train(model)
    assert seen == [True] * 5 and not model.act.inplace
    import n2n.train.fit as fit

    monkeypatch.setattr(fit, "relus_in_place", lambda m: contextlib.nullcontext(0))
    train(reference)  # every ReLU out of place
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_command_line_turns_on_huge_pages_unless_the_user_chose(monkeypatch, tmp_path):
    from n2n.cli import main

    monkeypatch.delenv(HUGE_PAGES_ENV, raising=False)
    assert main(["evaluate", str(tmp_path / "missing")]) != 0  # fails on its input, after the set-up
    assert os.environ[HUGE_PAGES_ENV] == "1"
    monkeypatch.setenv(HUGE_PAGES_ENV, "0")
    main(["evaluate", str(tmp_path / "missing")])
    assert os.environ[HUGE_PAGES_ENV] == "0"


@pytest.mark.skipif(
    "[never]"
    in (
        Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
        if Path("/sys/kernel/mm/transparent_hugepage/enabled").exists()
        else "[never]"
    ),
    reason="the kernel has no transparent huge pages",
)
def test_pytorch_backs_large_buffers_with_huge_pages_once_enabled():
    """The variable enable_huge_pages() sets is the one this PyTorch reads: its large buffers land on huge pages."""
    code = (
        "from n2n.train.compute import enable_huge_pages; enable_huge_pages(); import torch; "
        "x = [torch.ones(2**21) for _ in range(8)]; "
        "print(next(l.split()[1] for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages')))"
    )
    env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) > 0
