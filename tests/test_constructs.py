"""Constructs of torchvision and timm networks, each in a tiny hand-written network (tests/gallery.py), so that the
CPU suite checks what tests/models checks on the real networks (issue 21)."""

import random

import pytest
import torch
from gallery import build
from torch import nn

from n2n.models import ModelSpec, load_model, save_model
from n2n.surgery import Edits, analyze, apply_edits, count_params, remove_layers, shrink_layers
from n2n.surgery._fx import trace

SHAPE = (1, 8, 8)


RGB = (3, 8, 8)  # a depthwise convolution needs at least two input channels


def _net(name, in_channels=1):
    torch.manual_seed(0)
    return build(name, in_channels=in_channels).eval()


def _x(shape=SHAPE):
    return torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))


def _offered_edits_work(model, analysis, trials=6, seed=0):
    """Every sampled edit made of offered decisions gives a network that trains (forward + backward)."""
    rng = random.Random(seed)
    x = _x(analysis.input_shape)
    for _ in range(trials):
        removed = [layer.name for layer in analysis.layers if layer.removable and rng.random() < 0.4]
        keep = {layer.name: rng.choice([0.25, 0.5, 0.75]) for layer in analysis.layers if layer.shrinkable}
        for edits in (Edits.make(removed), Edits.make(keep=keep)):
            if edits.removed or edits.keep:
                student = apply_edits(model, edits, x, analysis.protected()).train()
                student(x).sum().backward()
                assert count_params(student) < count_params(model)


def test_a_depthwise_first_layer_is_analysed_and_not_offered_for_shrinking():
    model = _net("depthwisefirst", in_channels=3)
    analysis = analyze(model, RGB)  # raised "min() arg is an empty sequence"
    first = analysis.layers[0]
    assert first.kind == "depthwise" and not first.shrinkable and "network's input channels" in first.shrink_reason
    _offered_edits_work(model, analysis)


def test_stage_two_analyses_a_student_whose_first_remaining_layer_is_depthwise():
    model = _net("mobilenetv2", in_channels=3)
    student = remove_layers(model, ["stem.0", "blocks.0.expand.0"], _x(RGB))  # first layer left: a depthwise
    analysis = analyze(student, RGB, check_removals=False)
    assert analysis.layers[0].name == "blocks.0.depthwise.0" and analysis.layers[0].kind == "depthwise"
    assert not analysis.layers[0].shrinkable


@pytest.mark.parametrize("removed", [["branch1.conv"], ["stem", "branch1.conv"], ["branch3.0.conv", "branch3.1.conv"]])
def test_an_inplace_relu_left_on_a_shared_input_becomes_out_of_place(removed):
    x = _x()
    before = x.clone()
    student = remove_layers(_net("inception"), removed, x).train()
    student(x).sum().backward()  # raised "modified by an inplace operation" when the ReLU wrote into the input
    assert torch.equal(x, before), "the network wrote into its input"


def test_an_inplace_relu_left_on_one_view_of_a_channel_split_becomes_out_of_place():
    x = _x()
    student = remove_layers(_net("shuffle"), ["branch.0"], x).train()
    student(x).sum().backward()  # raised "Output 1 of SplitBackward0 is a view and is being modified inplace"
    assert count_params(student) < count_params(_net("shuffle"))


def test_a_layer_whose_cut_count_depends_on_which_channels_is_not_offered_and_students_reload(tmp_path):
    model, x = _net("ghost"), _x()
    analysis = analyze(model, SHAPE)
    layers = {layer.name: layer for layer in analysis.layers}
    stem = layers["stem.0"]  # was offered: its students got 4 to 8 channels of 8 cut, by the teacher's weights
    assert not stem.shrinkable and "depends on which channels are cut" in stem.shrink_reason
    assert "cutting 2 channels cuts 4 or 2 channels of stem.0" in stem.shrink_reason
    assert layers["inner.0"].shrinkable and layers["last.0"].shrinkable
    _offered_edits_work(model, analysis)
    edits = Edits.make(["cheap.0"], {"inner.0": 0.5, "last.0": 0.25})
    student = apply_edits(model, edits, x, analysis.protected())
    arch = {"source": "import", "target": "gallery:build", "kwargs": {"name": "ghost"}}
    save_model(student, ModelSpec(arch=arch, input_shape=SHAPE, num_classes=10, edits=edits), tmp_path / "s")
    reloaded, _ = load_model(tmp_path / "s", trust_code=True)
    with torch.no_grad():
        assert torch.allclose(student.eval()(x), reloaded(x), atol=1e-6)


def test_norm_subclasses_outside_torch_nn_keep_their_type_and_shrink():
    from gallery import ChannelLayerNorm, NormAct

    model, x = _net("customnorm"), _x()
    gm = trace(model)
    assert isinstance(gm.bn1, NormAct) and isinstance(gm.ln, ChannelLayerNorm)
    shrunk = shrink_layers(remove_layers(model, [], x), {"conv1": 0.5}, x)
    assert isinstance(shrunk.bn1, NormAct) and shrunk.bn1.num_features == 4 and shrunk.bn1.running_mean.shape == (4,)
    assert isinstance(shrunk.bn1.act, nn.SiLU)
    removed = remove_layers(model, ["conv3"], x)  # the channel norm now gets conv2's 8 channels instead of 16
    assert isinstance(removed.ln, ChannelLayerNorm) and removed.ln.normalized_shape == (8,)
    assert removed(x).shape == (2, 10)
    _offered_edits_work(model, analyze(model, SHAPE))


def test_training_only_branches_are_not_frozen_into_a_student(tmp_path):
    model = _net("customnorm").train()  # traced in training mode, the stochastic depth and aux head would stay
    x = _x()
    edits = Edits.make(keep={"conv1": 0.5})
    student = apply_edits(model, edits, x)
    student.train()
    assert torch.equal(student(x), student(x)), "a stochastic branch was frozen into the graph"
    assert not any(name.startswith("aux") for name, _ in student.named_parameters())
    arch = {"source": "import", "target": "gallery:build", "kwargs": {"name": "customnorm"}}
    save_model(student, ModelSpec(arch=arch, input_shape=SHAPE, num_classes=10, edits=edits), tmp_path / "s")
    reloaded, _ = load_model(tmp_path / "s", trust_code=True)
    with torch.no_grad():
        assert torch.allclose(student.eval()(x), reloaded(x), atol=1e-6)


def test_grouped_convolutions_are_not_offered_for_shrinking():
    model = _net("grouped")
    layers = {layer.name: layer for layer in analyze(model, SHAPE).layers}
    for name in ("reduce", "grouped"):
        assert not layers[name].shrinkable and "grouped convolution grouped (groups=4)" in layers[name].shrink_reason
    assert layers["stem"].shrinkable
    _offered_edits_work(model, analyze(model, SHAPE))


def test_a_removal_that_widens_the_next_layer_is_not_offered():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 2, 1),  # a 1x1 reduction: without it the next conv takes 16 channels, not 2
        nn.ReLU(),
        nn.Conv2d(2, 16, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    layers = {layer.name: layer for layer in analyze(model, SHAPE).layers}
    assert not layers["2"].removable and "does not make the network smaller" in layers["2"].remove_reason
    assert layers["0"].removable and layers["4"].removable


def test_a_token_network_with_an_optional_input_is_analysed_and_its_offers_work():
    model = _net("tokens")
    layers = {layer.name: layer for layer in analyze(model, SHAPE).layers}  # TypeError: the mask got the image
    assert not layers["qkv"].shrinkable and "depends on which channels are cut" in layers["qkv"].shrink_reason
    assert layers["fc1"].shrinkable and layers["patch"].shrinkable  # Torch-Pruning cuts the token and position too
    _offered_edits_work(model, analyze(model, SHAPE))


def test_a_torch_pruning_call_that_runs_too_long_is_a_typed_rejection(monkeypatch):
    import time

    import torch_pruning as tp

    from n2n.errors import SurgeryError
    from n2n.surgery import shrink

    def endless(*args, **kwargs):
        while True:  # timm's LeViT kept Torch-Pruning busy for 17 minutes
            time.sleep(0.01)

    monkeypatch.setattr(shrink, "TORCH_PRUNING_SECONDS", 0.2)
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", endless)
    start = time.monotonic()
    with pytest.raises(SurgeryError, match=r"Torch-Pruning took more than 0.2 s to build the dependency graph"):
        shrink_layers(_net("grouped"), {"stem": 0.5}, _x())
    assert time.monotonic() - start < 5


def test_a_network_torch_pruning_cannot_follow_still_offers_its_removals(monkeypatch):
    import torch_pruning as tp

    def fails(*args, **kwargs):
        raise ZeroDivisionError("integer division or modulo by zero")  # what ShuffleNet's channel shuffle gives

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", fails)
    model = _net("grouped")
    analysis = analyze(model, SHAPE)
    assert not any(layer.shrinkable for layer in analysis.layers)
    assert all("cannot build the dependency graph" in layer.shrink_reason for layer in analysis.layers[:-1])
    assert [layer.name for layer in analysis.layers if layer.removable] == ["stem", "grouped", "expand"]
    _offered_edits_work(model, analysis)


def test_a_torch_pruning_call_that_needs_too_much_memory_is_a_typed_rejection(monkeypatch):
    import torch_pruning as tp

    from n2n.errors import SurgeryError
    from n2n.surgery import shrink

    def greedy(*args, **kwargs):
        return [bytearray(2**20) for _ in range(1024)]  # swin_t's index lists grew to 22 GB

    monkeypatch.setattr(shrink, "TORCH_PRUNING_BYTES", 256 * 2**20)
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", greedy)
    with pytest.raises(SurgeryError, match=r"Torch-Pruning needed more than 0.25 GiB to build the dependency graph"):
        shrink_layers(_net("grouped"), {"stem": 0.5}, _x())
    assert bytearray(2**29), "the memory bound was lifted afterwards"


def test_a_layer_torch_pruning_would_track_by_millions_of_indices_is_not_offered(monkeypatch):
    from n2n.errors import SurgeryError
    from n2n.surgery import shrink

    class Flat(nn.Module):  # a flatten maps one channel of `body` to 8x8 = 64 indices of the head's inputs
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.body = nn.Conv2d(4, 6, 3, padding=1)
            self.head = nn.Linear(6 * 8 * 8, 10)

        def forward(self, x):
            return self.head(torch.flatten(self.body(torch.relu(self.stem(x))), 1))

    model = Flat().eval()
    layers = {layer.name: layer for layer in analyze(model, SHAPE).layers}
    assert layers["body"].shrinkable and layers["stem"].shrinkable
    tracked = 6 * sum(
        len(idxs)
        for _, idxs in shrink.dependency_graph(model, _x()).get_pruning_group(
            model.body, shrink._prune_fn(model.body), idxs=[0]
        )
    )
    assert tracked >= 6 * 64
    monkeypatch.setattr(shrink, "MAX_GROUP_INDICES", tracked - 1)  # one index short of what cutting `body` tracks
    layers = {layer.name: layer for layer in analyze(model, SHAPE).layers}
    assert not layers["body"].shrinkable
    assert f"would track {tracked:,}" in layers["body"].shrink_reason
    assert layers["stem"].shrinkable, "a layer whose channels map one to one is still offered"
    with pytest.raises(SurgeryError, match=r"Torch-Pruning maps one of its channels to \d+ indices"):
        shrink_layers(model, {"body": 0.5}, _x())
    shrink_layers(model, {"stem": 0.5}, _x())


def test_bisecting_failing_shrinks_holds_no_earlier_trial_alive(monkeypatch):
    # maxvit_t at 224x224 grew past 10 GB in analyze: the bisection recursed inside the exception handler, whose
    # traceback kept every failed trial's copy and dependency graph (over a GB each) alive down the recursion
    import copy
    import gc
    import weakref

    from n2n.errors import SurgeryError
    from n2n.surgery import analysis

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(8)])
    names = [str(i) for i in range(8)]
    bad = {"2", "5"}
    trials = weakref.WeakSet()
    alive_at_entry = []

    def trial(model, keep, example, protected):
        gc.collect()
        alive_at_entry.append(len(trials))
        student = copy.deepcopy(model)  # what shrink_layers makes, and leaves behind when it fails
        trials.add(student)
        if bad & set(keep):
            raise SurgeryError(sorted(bad & set(keep))[0], "cannot be cut")
        return student

    monkeypatch.setattr(analysis, "shrink_layers", trial)
    failing = analysis._failing_shrinks(model, names, torch.randn(1, 2, 4, 4), set())
    assert sorted(failing) == sorted(bad) and all("cannot be cut" in why for why in failing.values())
    assert len(alive_at_entry) > 4 and max(alive_at_entry) == 0, alive_at_entry
