"""Teachers from a user's own code and weight files: import paths, state dicts, safetensors, refused pickles."""

import json
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from n2n.cli import main
from n2n.errors import ModelError
from n2n.models import load_model
from n2n.models.source import load_weights, resolve_teacher

USER_MODULE = textwrap.dedent("""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Net(nn.Module):
        def __init__(self, num_classes=10, width=8):
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1)
            self.conv3 = nn.Conv2d(width, 2 * width, 3, padding=1, stride=2)
            self.dw = nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2 * width)
            self.classifier = nn.Linear(2 * width * 4 * 4, num_classes)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = x + F.relu(self.conv2(x))
            x = F.relu(self.dw(F.relu(self.conv3(x))))
            return self.classifier(torch.flatten(x, 1))

    def build_net(**kwargs):
        return Net(**kwargs)

    NOT_CALLABLE = 3
""")


class Evil:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "usernets"
    sys.modules.pop("usernets", None)


@pytest.fixture
def user_weights(user_module, tmp_path):
    import usernets

    torch.manual_seed(0)
    net = usernets.build_net(width=8)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, tmp_path / "ckpt.pth")
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    return net


@pytest.mark.parametrize("filename", ["net.pt", "ckpt.pth", "net.safetensors"])
def test_import_path_teacher_with_weights(user_weights, tmp_path, filename):
    model, spec = resolve_teacher(
        "usernets:build_net", weights=tmp_path / filename, kwargs={"width": 8}, input_shape=(1, 8, 8), num_classes=10
    )
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), user_weights.eval()(x))
    assert spec.arch == {"source": "import", "target": "usernets:build_net", "kwargs": {"width": 8}}
    assert spec.num_classes == 10


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"weight": torch.zeros(1), "payload": Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="--trust-pickle"):
        load_weights(tmp_path / "evil.pt")
    assert not marker.exists()


def test_full_pickle_loads_only_when_trusted(user_weights, tmp_path):
    torch.save(user_weights, tmp_path / "whole.pt")  # a pickled module, not a state dict
    with pytest.raises(ModelError, match="--trust-pickle"):
        resolve_teacher("usernets:build_net", weights=tmp_path / "whole.pt", input_shape=(1, 8, 8), num_classes=10)
    model, _ = resolve_teacher(
        "usernets:build_net", weights=tmp_path / "whole.pt", input_shape=(1, 8, 8), num_classes=10, trust_pickle=True
    )
    assert torch.equal(model.conv1.weight, user_weights.conv1.weight)


@pytest.mark.parametrize(
    "teacher, weights, message",
    [
        ("usernets:missing", None, "has no attribute 'missing'"),
        ("usernets:NOT_CALLABLE", None, "not a class or function"),
        ("no_such_module_xyz:net", None, "cannot import 'no_such_module_xyz'"),
        ("usernets:build_net", None, "pass its trained weights with --weights"),
        ("usernets:build_net", "nowhere.pt", "no such file"),
        ("resnet99", None, "neither a saved n2n model directory"),
    ],
)
def test_bad_teachers_are_named(user_module, teacher, weights, message):
    with pytest.raises(ModelError, match=message):
        resolve_teacher(teacher, weights=weights, input_shape=(1, 8, 8), num_classes=10)


def test_weights_that_do_not_fit(user_weights, tmp_path):
    with pytest.raises(ModelError, match="do not fit"):
        resolve_teacher(
            "usernets:build_net",
            weights=tmp_path / "net.pt",
            kwargs={"width": 4},
            input_shape=(1, 8, 8),
            num_classes=10,
        )


def test_inspect_json_marks_head_and_coupled_layers(user_module, capsys):
    assert (
        main(["inspect", "--teacher", "usernets:build_net", "--input-shape", "1,8,8", "--json", "--fix", "conv3"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    by = {layer["name"]: layer for layer in result["layers"]}
    assert list(by) == ["conv1", "conv2", "conv3", "dw", "classifier"]
    assert by["classifier"]["remove"].startswith("no: classifier head")
    assert by["conv3"]["remove"] == "no: held by --fix"
    assert by["conv2"]["shrink"].startswith("no: shares its output channels with conv1")
    assert by["dw"]["type"] == "depthwise"
    assert result["params"] == sum(layer["params"] for layer in result["layers"])
    assert result["summary"]["layers"] == 5


def test_inspect_table(user_module, capsys):
    assert main(["inspect", "--teacher", "usernets:build_net", "--input-shape", "1,8,8"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "classifier head" in out and "conv1" in out


@pytest.mark.slow
def test_compress_an_import_path_teacher_and_reload_the_student(user_weights, tmp_path):
    from n2n.data import load_data
    from n2n.models.io import UntrustedCodeError
    from n2n.recipes import Recipe
    from n2n.teacher import train_classifier

    train_classifier(user_weights, load_data("digits"), Recipe(epochs=5), seed=0)  # past chance: the search checks
    save_file(user_weights.state_dict(), str(tmp_path / "net.safetensors"))
    run = tmp_path / "run"
    code = main(
        [
            "compress",
            "--teacher",
            "usernets:build_net",
            "--weights",
            str(tmp_path / "net.safetensors"),
            "--teacher-kwargs",
            '{"width": 8}',
            "--data",
            "digits",
            "--out",
            str(run),
            "--updates",
            "2",
            "--rollouts",
            "2",
            "--steps",
            "5",
            "--finetune-epochs",
            "1",
            "--finetune-min-steps",
            "5",
        ]
    )
    assert code == 0
    report = json.loads((run / "report.json").read_text())
    with pytest.raises(UntrustedCodeError, match="usernets:build_net"):  # the spec names code: not without trust
        load_model(run / "student")
    student, spec = load_model(run / "student", trust_code=True)
    assert spec.arch["target"] == "usernets:build_net"
    assert sum(p.numel() for p in student.parameters()) == report["student"]["params"] < report["teacher"]["params"]
    assert student(torch.randn(2, 1, 8, 8)).shape == (2, 10)
