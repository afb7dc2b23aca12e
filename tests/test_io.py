import json

import pytest
import torch

from n2n.data import load_data
from n2n.errors import ModelError
from n2n.models import load_model, save_model
from n2n.surgery import Edits, analyze, apply_edits
from n2n.teacher import teacher_spec


def test_teacher_and_student_round_trip(tmp_path):
    data = load_data("digits")
    spec = teacher_spec("resnet18", data, width=0.125)
    from n2n.models import build_model

    torch.manual_seed(0)
    teacher = build_model(spec).eval()
    save_model(teacher, spec, tmp_path / "teacher")
    loaded, loaded_spec = load_model(tmp_path / "teacher")
    x = data.test.x[:4]
    assert torch.equal(loaded(x), teacher(x)) and loaded_spec == spec

    protected = analyze(teacher, data.input_shape).protected()
    edits = Edits.make(["layer2.0.conv1", "layer3.1.conv2"], {"stem.0": 0.5, "layer4.0.conv1": 0.25})
    student = apply_edits(teacher, edits, x[:2], protected).eval()
    s_spec = spec.with_edits(edits)
    save_model(student, s_spec, tmp_path / "student")
    assert json.loads((tmp_path / "student" / "spec.json").read_text())["edits"]["removed"] == list(edits.removed)
    back, back_spec = load_model(tmp_path / "student")
    assert torch.equal(back(x), student(x)) and back_spec.edits == edits


def test_a_student_shrunk_across_a_zero_padded_shortcut_round_trips(tmp_path):
    """Without its projection shortcut a block adds a zero-padded copy of its input; shrinking the layers on both
    sides reorders that padding, which the saved student carries (and rebuilds from any weights)."""
    data = load_data("digits")
    spec = teacher_spec("resnet18", data, width=0.125)
    from n2n.models import build_model

    torch.manual_seed(0)
    teacher = build_model(spec).eval()
    x = data.test.x[:4]
    edits = Edits.make(["layer2.0.shortcut.0"], {"stem.0": 0.5, "layer2.0.conv2": 0.5})
    student = apply_edits(teacher, edits, x[:2], ["fc"]).eval()
    assert student.get_submodule("stem.0").out_channels == 4
    assert student.get_submodule("layer2.0.conv2").out_channels == 8
    save_model(student, spec.with_edits(edits), tmp_path / "student")
    back, _ = load_model(tmp_path / "student")
    assert torch.equal(back(x), student(x))


def test_load_errors(tmp_path):
    with pytest.raises(ModelError, match="not a saved n2n model"):
        load_model(tmp_path)
    (tmp_path / "spec.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a readable JSON model spec"):
        load_model(tmp_path)
