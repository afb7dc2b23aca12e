"""Property tests: random removal and shrink actions on the gallery and the zoo never break the surgery.

Every sampled edit yields either a network that runs on the input shape, keeps the number of classes and has fewer
parameters than the teacher, or a SurgeryError with a reason. Anything else (an unexpected exception, a wrong
output shape, a modified teacher) fails the test.
"""

import pytest
import torch
from gallery import GALLERY, build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx, nn

from n2n.errors import ModelError, SurgeryError
from n2n.models import create_model
from n2n.surgery import Edits, analyze, apply_edits, count_params, remove_layers
from n2n.surgery.shrink import keep_count

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
ZOO = ("lenet5", "vgg11", "vgg13", "vgg16", "vgg19")
DEEP = ("resnet18", "resnet34")  # slow to cut (many coupled residual groups): fewer examples
PROPERTY = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
FEWER = settings(PROPERTY, max_examples=3)


def _model(name):
    torch.manual_seed(0)
    if name in GALLERY:
        return build(name).eval()
    return create_model(name, in_channels=1, num_classes=10, input_size=8, width=0.125).eval()


_CACHE = {}


def _subject(name):
    """The model, its analysis and a copy of its weights, built once per name."""
    if name not in _CACHE:
        model = _model(name)
        _CACHE[name] = (model, analyze(model, (1, 8, 8)), {k: v.clone() for k, v in model.state_dict().items()})
    return _CACHE[name]


def _out(module):
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _check(name, data):
    model, analysis, weights = _subject(name)
    x = torch.randn(2, 1, 8, 8)
    removable = [layer.name for layer in analysis.layers if layer.removable]
    removed = data.draw(st.lists(st.sampled_from(removable), unique=True) if removable else st.just([]), "removed")
    try:
        stage1 = remove_layers(model, removed, x)
        shrinkable = [
            layer.name for layer in analyze(stage1, (1, 8, 8), check_removals=False).layers if layer.shrinkable
        ]
        keep = {n: data.draw(st.sampled_from(FRACTIONS), n) for n in shrinkable}
        student = apply_edits(model, Edits.make(removed, keep), x, analysis.protected()).eval()
    except SurgeryError as err:
        assert err.reason, "a rejection must say why"
        return
    with torch.no_grad():
        out = student(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    for n, fraction in keep.items():  # every shrink decision is applied
        assert _out(student.get_submodule(n)) == keep_count(_out(stage1.get_submodule(n)), fraction), n
    if removed or any(f < 1.0 for f in keep.values()):
        assert count_params(student) < count_params(model)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items()), "the teacher was modified"


@pytest.mark.parametrize("name", list(GALLERY) + list(ZOO))
@PROPERTY
@given(data=st.data())
def test_random_edits_give_a_working_smaller_network_or_a_reason(name, data):
    _check(name, data)


@pytest.mark.slow
@pytest.mark.parametrize("name", DEEP)
@FEWER
@given(data=st.data())
def test_random_edits_on_deep_residual_networks(name, data):
    _check(name, data)


@pytest.mark.parametrize("name", list(GALLERY))
def test_gallery_models_have_decisions_and_a_fixed_head(name):
    model, analysis, _ = _subject(name)
    assert any(layer.removable for layer in analysis.layers)
    assert any(layer.shrinkable for layer in analysis.layers)
    head = analysis.layers[-1]
    assert not head.removable and not head.shrinkable and "classifier head" in head.remove_reason
    assert analysis.num_outputs == 10 and analysis.params == count_params(model)


def test_depthwise_layers_follow_their_producer():
    _, analysis, _ = _subject("mobilenetv2")
    by = {layer.name: layer for layer in analysis.layers}
    dw = by["blocks.0.depthwise.0"]
    assert dw.kind == "depthwise" and not dw.shrinkable
    assert "blocks.0.expand.0" in dw.shrink_reason


def test_dense_concatenation_students_run():
    model, analysis, _ = _subject("densenet")
    x = torch.randn(2, 1, 8, 8)
    student = apply_edits(
        model, Edits.make(["block.1.conv"], {"stem": 0.5, "block.0.conv": 0.5}), x, analysis.protected()
    )
    assert student(x).shape == (2, 10)
    assert count_params(student) < count_params(model)


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 64, 10)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # Python control flow on a tensor value: torch.fx cannot trace this
            x = x * 2
        return self.fc(x.flatten(1))


def test_untraceable_model_names_the_construct_and_the_workaround():
    with pytest.raises(ModelError) as err:
        analyze(DataDependent(), (1, 8, 8))
    message = str(err.value)
    assert "torch.fx" in message
    assert "leaf" in message or "--fix" in message


def test_traced_graph_module_is_accepted():
    model = fx.symbolic_trace(build("functional").eval())
    assert [layer.name for layer in analyze(model, (1, 8, 8)).layers][-1] == "fc2"
