import pytest
import torch
from torch import fx

from n2n.errors import ModelError
from n2n.models import create_model, list_models
from n2n.surgery import count_params


@pytest.mark.parametrize(
    "name, classes, expected",
    [
        ("resnet18", 10, 11_173_962),  # paper: 11.17M
        ("resnet34", 10, 21_282_122),  # paper: 21.28M
        ("resnet18", 100, 11_220_132),  # paper, CIFAR-100: 11.22M
        ("resnet34", 100, 21_328_292),  # paper, CIFAR-100: 21.33M
    ],
)
def test_resnet_parameter_counts_match_paper(name, classes, expected):
    assert count_params(create_model(name, in_channels=3, num_classes=classes, input_size=32)) == expected


def test_caltech256_resnet18_parameter_count():
    # paper: 11.31M, which an ImageNet-style 7x7 stem gives (+3*64*(49-9) = 11,307,840); ours has the CIFAR 3x3 stem
    assert count_params(create_model("resnet18", in_channels=3, num_classes=256, input_size=64)) == 11_300_160


def test_vgg_parameter_counts():
    assert count_params(create_model("vgg13", in_channels=1, num_classes=10)) == 9_411_914  # paper, MNIST: 9.4M
    assert count_params(create_model("vgg19", in_channels=3, num_classes=10)) == 20_035_018  # paper: 20.2M


@pytest.mark.parametrize("name", ["lenet5", "vgg11", "vgg16", "resnet18", "resnet34"])
@pytest.mark.parametrize("size, channels", [(8, 1), (28, 1), (32, 3)])
def test_output_shape_and_fx_trace(name, size, channels):
    torch.manual_seed(0)
    m = create_model(name, in_channels=channels, num_classes=7, input_size=size, width=0.125).eval()
    x = torch.randn(2, channels, size, size)
    y = m(x)
    assert y.shape == (2, 7)
    assert torch.allclose(fx.symbolic_trace(m)(x), y)


def test_width_and_errors():
    assert count_params(create_model("vgg11", width=0.5)) < count_params(create_model("vgg11"))
    assert set(list_models()) >= {"lenet5", "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet34"}
    with pytest.raises(ModelError, match="known: .*resnet18"):
        create_model("alexnet")
    with pytest.raises(ModelError, match="width"):
        create_model("vgg11", width=0)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("vgg11", num_classes=1)
