import copy
import random

import pytest
import torch
from torch import nn

from n2n.errors import ModelError, SurgeryError
from n2n.models import create_model
from n2n.surgery import Bypass, Edits, analyze, apply_edits, count_params, remove_layers, shrink_layers
from n2n.surgery._fx import module_of, propagate, trace
from n2n.surgery.repair import repair
from n2n.surgery.shrink import keep_count

SLOW = pytest.mark.slow  # 20-100 s each on 2 cores: the deep networks' sampled edits run in the full suite only
ZOO = [
    ("lenet5", 8, 6),
    ("vgg11", 8, 6),
    pytest.param("vgg13", 28, 4, marks=SLOW),
    pytest.param("resnet18", 8, 4, marks=SLOW),
    pytest.param("resnet34", 8, 2, marks=SLOW),
]


def _out(module):
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _check_sampled_edits(model, shape, trials, seed=0):
    """Every sampled removal/shrink edit gives a working smaller network or a SurgeryError; nothing else."""
    analysis = analyze(model, shape)
    rng = random.Random(seed)
    x = torch.randn(2, *shape)
    teacher_params = count_params(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcomes = {"ok": 0, "rejected": 0}
    for _ in range(trials):
        removed = [l.name for l in analysis.layers if l.removable and rng.random() < 0.4]
        try:  # as the search does: stage 2 decides on the layers of the stage-1 student
            stage1 = remove_layers(model, removed, x)
            shrinkable = [l.name for l in analyze(stage1, shape, check_removals=False).layers if l.shrinkable]
            keep = {name: rng.choice([0.1, 0.3, 0.5, 0.8, 1.0]) for name in shrinkable}
            student = apply_edits(model, Edits.make(removed, keep), x, analysis.protected()).eval()
        except SurgeryError as err:
            assert err.reason
            outcomes["rejected"] += 1
            continue
        assert student(x).shape == (2, analysis.num_outputs)
        for name, fraction in keep.items():  # every decision is applied, not only every other one
            assert _out(student.get_submodule(name)) == keep_count(_out(stage1.get_submodule(name)), fraction), name
        if removed or any(f < 1 for f in keep.values()):
            assert count_params(student) < teacher_params
        outcomes["ok"] += 1
    # the teacher is never modified
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return outcomes


@pytest.mark.parametrize("name, size, trials", ZOO)
def test_zoo_sampled_edits(name, size, trials):
    torch.manual_seed(0)
    model = create_model(name, in_channels=1, num_classes=10, input_size=size, width=0.125).eval()
    outcomes = _check_sampled_edits(model, (1, size, size), trials=trials)
    assert outcomes["ok"] == trials


@pytest.mark.slow
def test_custom_residual_model_sampled_edits(small_resnet):
    outcomes = _check_sampled_edits(small_resnet, (1, 8, 8), trials=25)
    assert outcomes["ok"] == 25


def test_analysis_of_custom_model(small_resnet):
    a = analyze(small_resnet, (1, 8, 8))
    assert a.names() == ["stem", "b1.conv1", "b1.conv2", "b2.conv1", "b2.conv2", "b2.short.0", "fc"]
    by = {l.name: l for l in a.layers}
    assert not by["fc"].removable and not by["fc"].shrinkable and "classifier head" in by["fc"].remove_reason
    assert all(by[n].removable for n in a.names()[:-1])
    # coupled through residual additions: one decision per group
    assert by["stem"].coupled == ("stem", "b1.conv2") and by["stem"].shrinkable
    assert not by["b1.conv2"].shrinkable and "stem" in by["b1.conv2"].shrink_reason
    assert by["b2.conv2"].coupled == ("b2.conv2", "b2.short.0")
    # skip features locate layers in their residual branch
    assert (by["b1.conv1"].skip_start, by["b1.conv1"].skip_end) == (1, 2)
    assert (by["b1.conv2"].skip_start, by["b1.conv2"].skip_end) == (2, 1)
    assert (by["stem"].skip_start, by["stem"].skip_end) == (0, 0)
    assert a.features().shape == (7, 12) and torch.isfinite(a.features()).all()
    assert a.params == count_params(small_resnet)


def test_fix_patterns_hold_layers(small_resnet):
    a = analyze(small_resnet, (1, 8, 8), fix=["b2.*"])
    by = {l.name: l for l in a.layers}
    assert not by["b2.conv1"].removable and by["b2.conv1"].remove_reason == "held by --fix"
    assert by["b1.conv1"].removable


def test_removed_residual_branch_falls_back_to_shortcut(small_resnet):
    x = torch.randn(2, 1, 8, 8)
    gm = remove_layers(small_resnet, ["b1.conv1", "b1.conv2"], x)
    code = gm.code
    assert "b1.conv1" not in code and "b1.conv2" not in code  # the branch is gone, not just bypassed
    assert gm(x).shape == (2, 10)


def test_removing_a_strided_channel_changing_layer_adapts_the_next(small_resnet):
    x = torch.randn(2, 1, 8, 8)
    gm = remove_layers(small_resnet, ["b2.conv1"], x)
    assert isinstance(gm.get_submodule("b2.conv1"), Bypass)
    assert gm.get_submodule("b2.conv2").in_channels == 8  # adapted from 16
    assert torch.equal(gm.get_submodule("b2.conv2").weight, small_resnet.b2.conv2.weight[:, :8])  # inherited
    assert gm(x).shape == (2, 10)


def test_shrink_keeps_strongest_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        model[0].weight.mul_(torch.tensor([0.01, 10.0, 0.02, 5.0]).view(4, 1, 1, 1))
    small = shrink_layers(model, {"0": 0.5}, torch.randn(2, 1, 8, 8), protected=["3"])
    assert small[0].out_channels == 2
    assert torch.equal(small[0].weight, model[0].weight[[1, 3]])
    assert small[3].in_features == 2 * 36
    with pytest.raises(SurgeryError, match="protected"):
        shrink_layers(model, {"3": 0.5}, torch.randn(2, 1, 8, 8), protected=["3"])


def test_shrink_applies_every_layer_of_a_chain():
    """Shrinking a layer also cuts the next layer's inputs; that must not take the next layer's own decision."""
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(32, 3)
    )
    small = shrink_layers(model, {"0": 0.5, "2": 0.25, "4": 0.75}, torch.randn(2, 1, 8, 8), protected=["6"])
    assert [small[i].out_channels for i in (0, 2, 4)] == [4, 2, 6]
    assert [small[i].in_channels for i in (2, 4)] == [4, 2]
    assert small[6].in_features == 6 * 2 * 2


def test_typed_errors():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(SurgeryError, match="not a convolution or linear"):
        remove_layers(model, ["1"], x)

    class Untraceable(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ModelError, match="torch.fx cannot trace Untraceable"):
        analyze(Untraceable(), (1, 8, 8))


def test_edits_canonical_and_round_trip():
    e = Edits.make(["b", "a"], {"x": 0.5, "y": 1.0})
    assert e.removed == ("a", "b") and e.keep == (("x", 0.5),)
    assert Edits.from_dict(e.to_dict()) == e
    assert e.then(Edits.make(keep={"z": 0.25})).keep == (("x", 0.5), ("z", 0.25))


def test_removal_drops_a_relu_left_right_after_another():
    """Removing conv 4 (and its BN) leaves ReLU 6 after ReLU 2 through a max-pool: it goes (same outputs and
    gradients as the network that keeps it); ReLU 9 follows a batch norm and stays."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    )
    x = torch.randn(4, 1, 8, 8)
    gm = remove_layers(model, ["4"], x[:2]).train()
    assert [str(n.target) for n in gm.graph.nodes if isinstance(module_of(gm, n), nn.ReLU)] == ["2", "9"]
    reference = nn.Sequential(*[copy.deepcopy(model[i]) for i in (0, 1, 2, 3, 6, 7, 8, 9, 10, 11)]).train()
    out, expected = gm(x), reference(x)
    assert torch.equal(out, expected)
    out.pow(2).sum().backward()
    expected.pow(2).sum().backward()
    assert torch.equal(gm.get_submodule("0").weight.grad, reference[0].weight.grad)
    kept = remove_layers(model, ["7"], x[:2])  # ReLU 9 now follows ReLU 6 directly
    assert [str(n.target) for n in kept.graph.nodes if isinstance(module_of(kept, n), nn.ReLU)] == ["2", "6"]


def test_removed_layers_leave_no_stand_in_that_computes_nothing():
    """A removed layer that kept its size and its batch norm leave the graph (no call per forward pass); a
    strided one keeps its resampling stand-in, and the network's own identities stay."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Identity(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.Conv2d(4, 4, 3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(64, 3),
    ).eval()
    x = torch.randn(2, 1, 8, 8)
    gm = remove_layers(model, ["3", "5"], x)
    called = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    assert called == ["0", "1", "2", "5", "6", "7"]
    assert isinstance(gm.get_submodule("5"), Bypass) and isinstance(gm.get_submodule("2"), nn.Identity)
    assert "3" not in dict(gm.named_modules()) and "4" not in dict(gm.named_modules())
    assert set(gm.state_dict()) == {k for k in model.state_dict() if k.split(".")[0] in {"0", "1", "7"}}
    assert gm(x).shape == (2, 3)


def test_propagation_holds_only_the_values_asked_for():
    # maxvit_t at 224x224 held every activation of its thousands of nodes, twice during a removal: over 9 GB
    torch.manual_seed(0)
    gm = trace(create_model("resnet18", in_channels=1, num_classes=10, input_size=16, width=0.125).eval())
    x = torch.randn(2, 1, 16, 16)
    full = propagate(gm, x)
    convs = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(module_of(gm, n), nn.Conv2d)][:2]
    output = next(n for n in gm.graph.nodes if n.op == "output")
    kept = propagate(gm, x, keep=convs)
    assert set(kept) == {*convs, output} and len(full) > len(kept) + 10
    assert all(torch.equal(kept[n], full[n]) for n in kept)
    repaired = repair(gm, x)
    assert set(repaired) == {output} and torch.equal(repaired[output], full[output])


def test_surgery_leaves_no_copies_of_a_large_network_for_the_cycle_collector(monkeypatch):
    # traced copies sit in reference cycles: maxvit_t's removal checks piled up 1.2 GB per ten layers until killed
    import gc

    from torch import fx

    from n2n.surgery import _fx

    monkeypatch.setattr(_fx, "COLLECT_BYTES", 1)  # this tiny network counts as large
    torch.manual_seed(0)
    model = create_model("vgg11", in_channels=1, num_classes=10, input_size=16, width=0.125).eval()
    gc.collect()
    alive = {id(o) for o in gc.get_objects() if isinstance(o, fx.GraphModule)}  # other tests' cached students
    gc.disable()
    try:
        analysis = analyze(model, (1, 16, 16))
        apply_edits(
            model, Edits.make([analysis.layers[1].name], {analysis.layers[0].name: 0.5}), torch.randn(2, 1, 16, 16)
        )
        left = [o for o in gc.get_objects() if isinstance(o, fx.GraphModule) and id(o) not in alive]
    finally:
        gc.enable()
    assert len(analysis.layers) > 5 and len(left) <= 2, len(left)


def test_a_channel_pad_cuts_its_inputs_and_outputs_apart():
    from n2n.surgery import ChannelPad
    from n2n.surgery.shrink import ChannelPadPruner

    pad = ChannelPad(6, 3)
    x = torch.randn(2, 3, 4, 4)
    full = pad(x)
    assert torch.equal(full[:, :3], x) and not full[:, 3:].any()
    pruner = ChannelPadPruner()
    pruner.prune_in_channels(pad, [1])  # input 1 is gone: the output it fed is zero, the others keep their places
    assert pad.in_channels == 2 and pad.channels == 6
    expected = full.clone()
    expected[:, 1] = 0
    assert torch.equal(pad(x[:, [0, 2]]), expected)
    pruner.prune_out_channels(pad, [0, 4])
    assert torch.equal(pad(x[:, [0, 2]]), expected[:, [1, 2, 3, 5]])
    legacy = ChannelPad(6, 3)  # a student saved before the map was a buffer loads with the map as built
    legacy.load_state_dict({})
    assert torch.equal(legacy(x), full)


class _PaddedShortcut(nn.Module):
    """A residual block whose projection shortcut (4 -> 8 channels) the tests remove, so a ChannelPad takes its place."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.shortcut = nn.Conv2d(4, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.conv(h) + self.shortcut(h))
        return self.fc(h.mean((2, 3)))


def test_the_layers_on_both_sides_of_a_removed_projection_shortcut_still_shrink():
    """The zero-padded shortcut no longer ties the stem's channels to the block's: each side shrinks on its own, and
    cutting channels that carry nothing leaves the student's outputs as they were."""
    torch.manual_seed(0)
    model = _PaddedShortcut().eval()
    with torch.no_grad():  # stem channel 3 and conv channel 7 carry nothing: the weakest, and free to cut
        model.stem.weight[3] = 0
        model.stem.bias[3] = 0
        model.conv.weight[:, 3] = 0
        model.conv.weight[7] = 0
        model.conv.bias[7] = 0
        model.fc.weight[:, 7] = 0
    x = torch.randn(4, 1, 8, 8)
    student = remove_layers(model, ["shortcut"], x).eval()
    by = {layer.name: layer for layer in analyze(student, (1, 8, 8), check_removals=False).layers}
    assert by["stem"].shrinkable and by["conv"].shrinkable, (by["stem"].shrink_reason, by["conv"].shrink_reason)
    small = shrink_layers(student, {"stem": 0.75, "conv": 0.875}, x, protected=["fc"]).eval()
    assert small.get_submodule("stem").out_channels == 3 and small.get_submodule("conv").out_channels == 7
    assert count_params(small) < count_params(student)
    torch.testing.assert_close(small(x), student(x))
