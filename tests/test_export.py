"""Export to ONNX and TorchScript with the numerical check: zoo and gallery students, failures, the command."""

import dataclasses
import functools
import random

import pytest
import torch
from gallery import GALLERY, build
from torch import nn

from n2n.cli import main
from n2n.errors import N2NError, SurgeryError
from n2n.export import EXPORTERS, check_inputs, export_model, max_abs_diff
from n2n.models import ModelSpec, create_model, load_model, save_model
from n2n.surgery import Edits, analyze, apply_edits, count_params

SHAPE = (1, 8, 8)
FORMATS = tuple(EXPORTERS)


def _student(model, seed):
    """``model`` with a seeded random choice of removed layers and shrunk channels applied (as the search does)."""
    rng = random.Random(seed)
    analysis = analyze(model, SHAPE)
    x = torch.randn(2, *SHAPE)
    for _ in range(10):  # a few draws: some removal sets are rejected by the surgery with a reason
        removable = [layer.name for layer in analysis.layers if layer.removable]
        removed = rng.sample(removable, k=min(len(removable), rng.randint(1, 2)))
        try:
            stage1 = apply_edits(model, Edits.make(removed, {}), x, analysis.protected())
            shrinkable = [
                layer.name for layer in analyze(stage1, SHAPE, check_removals=False).layers if layer.shrinkable
            ]
            keep = {name: rng.choice((0.25, 0.5, 0.75)) for name in shrinkable}
            return apply_edits(model, Edits.make(removed, keep), x, analysis.protected()).eval()
        except SurgeryError:
            continue
    raise AssertionError("no random edit of the model was accepted")


@functools.cache
def _cached_student(name, seed):
    """The student of zoo or gallery network ``name``, built once (surgery on resnet18 takes a while)."""
    torch.manual_seed(0)
    model = build(name).eval() if name in GALLERY else _zoo(name)
    return model, _student(model, seed)


def _zoo(name):
    torch.manual_seed(0)
    return create_model(name, in_channels=1, num_classes=10, input_size=8, width=0.125).eval()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", ["vgg11", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_zoo_students_export_and_match(name, fmt, tmp_path):
    teacher, student = _cached_student(name, 1)
    assert count_params(student) < count_params(teacher)
    result = export_model(student, SHAPE, fmt, tmp_path / f"s{EXPORTERS[fmt].suffix}")
    assert result.path.is_file() and set(result.max_abs_diff) == {1, 16}
    assert max(result.max_abs_diff.values()) <= 1e-4
    # the file runs on its own at a batch size that was not checked (dynamic batch dimension)
    x = torch.randn(5, *SHAPE)
    assert max_abs_diff(student, EXPORTERS[fmt].runner(result.path), x) <= 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(GALLERY))
def test_gallery_students_export_and_match(name, fmt, tmp_path):
    _, student = _cached_student(name, 2)
    result = export_model(student, SHAPE, fmt, tmp_path / "s")
    assert max(result.max_abs_diff.values()) <= 1e-4


class BatchDependent(nn.Module):
    """A forward whose result depends on the batch size through Python control flow, which tracing fixes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out if x.shape[0] > 1 else out + 1.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_export_that_does_not_match_fails_and_is_not_kept(fmt, tmp_path):
    path = tmp_path / "bad"
    with pytest.raises(
        N2NError, match=r"differs from the PyTorch model by up to 1 \(batch sizes 1: 1, 16: [0-9.e-]+\)"
    ):
        export_model(BatchDependent().eval(), SHAPE, fmt, path)
    assert not path.exists()


def test_check_inputs_use_the_data_or_seeded_draws():
    data = torch.arange(40 * 64, dtype=torch.float32).reshape(40, *SHAPE)
    assert torch.equal(check_inputs(SHAPE, data, 16), data[:16])
    assert torch.equal(check_inputs(SHAPE, None, 4), check_inputs(SHAPE, None, 4))
    with pytest.raises(N2NError, match="shape"):
        check_inputs((3, 8, 8), data, 4)


def _saved_student(directory):
    teacher = _zoo("vgg11")
    edits = Edits.make([next(layer.name for layer in analyze(teacher, SHAPE).layers if layer.removable)], {})
    spec = ModelSpec(
        {
            "source": "zoo",
            "name": "vgg11",
            "kwargs": {"in_channels": 1, "num_classes": 10, "input_size": 8, "width": 0.125},
        },
        SHAPE,
        10,
        protected=tuple(analyze(teacher, SHAPE).protected()),
        normalization={"mean": [0.3], "std": [0.4]},
        meta={"data": "digits"},
    )
    student = apply_edits(teacher, edits, torch.zeros(2, *SHAPE), spec.protected).eval()
    save_model(student, spec.with_edits(edits), directory)
    return directory


def test_export_command_checks_on_digits_test_images(tmp_path, capsys):
    model_dir = _saved_student(tmp_path / "student")
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        assert main(["export", str(model_dir), "--format", fmt]) == 0
        assert (model_dir / f"model{suffix}").is_file()
        err = capsys.readouterr().err
        assert "digits test images" in err and "batch 16" in err
    out = tmp_path / "elsewhere" / "m.onnx"
    assert main(["export", str(model_dir), "--format", "onnx", "--out", str(out)]) == 0
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model, _ = load_model(model_dir)
    x = torch.randn(3, *SHAPE)
    assert torch.allclose(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), model(x), atol=1e-4)


def test_export_command_failure_is_one_line(tmp_path, capsys, monkeypatch):
    model_dir = _saved_student(tmp_path / "student")
    wrong = dataclasses.replace(EXPORTERS["torchscript"], runner=lambda path: lambda x: torch.zeros(x.shape[0], 10))
    monkeypatch.setitem(EXPORTERS, "torchscript", wrong)
    assert main(["export", str(model_dir), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "> --atol 0.0001" in err


def test_missing_onnx_is_a_one_line_install_hint(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    monkeypatch.setattr("importlib.import_module", lambda name: no_onnx(name))
    with pytest.raises(N2NError, match=r"onnx is not installed: `pip install 'n2n\[export\]'`"):
        export_model(_zoo("vgg11"), SHAPE, "onnx", tmp_path / "m.onnx")


def test_a_student_without_its_strided_stem_exports_to_onnx(tmp_path):
    """Removing a strided layer leaves an adaptive pool (the Bypass) whose input size the ONNX exporter loses; it is
    written as the fixed-window pool it is at the model's input size, and the file matches the student."""
    pytest.importorskip("onnxruntime")
    from n2n.export import fixed_pools

    torch.manual_seed(0)
    teacher = create_model("resnet18", in_channels=3, num_classes=10, input_size=[32, 32], width=0.25).eval()
    student = apply_edits(teacher, Edits(removed=("layer2.0.conv1", "stem.0")), torch.randn(1, 3, 32, 32)).eval()
    pools = fixed_pools(student, (3, 32, 32))
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in pools.modules())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(pools(x), student(x), atol=1e-5, rtol=1e-5)
    result = export_model(student, (3, 32, 32), "onnx", tmp_path / "student.onnx")
    assert result.path.is_file() and max(result.max_abs_diff.values()) < 1e-4
    uneven = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(4))  # 26 -> 4: windows differ, left adaptive
    assert isinstance(fixed_pools(uneven, (1, 28, 28))[1], nn.AdaptiveAvgPool2d)


def test_a_student_shrunk_across_a_zero_padded_shortcut_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    teacher = _zoo("resnet18")
    edits = Edits.make(["layer3.0.shortcut.0"], {"layer2.0.conv2": 0.5, "layer3.0.conv2": 0.75})
    student = apply_edits(teacher, edits, torch.randn(2, *SHAPE), ["fc"]).eval()
    result = export_model(student, SHAPE, "onnx", tmp_path / "student.onnx")
    assert result.path.is_file() and max(result.max_abs_diff.values()) < 1e-4
