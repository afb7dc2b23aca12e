"""--normalize: a teacher gets the inputs it was trained on (n2n.data.normalize, n2n.preprocess and the commands)."""

import json
import sys
import textwrap

import pytest
import torch

from n2n.cli import evaluate_cmd, export_cmd, main
from n2n.data import Normalization, load_data, parse_normalize
from n2n.data.normalize import IMAGENET_MEAN, IMAGENET_STD, candidates, fixed_normalization
from n2n.errors import ConfigError
from n2n.models import ModelSpec, save_model
from n2n.preprocess import choose_normalization, match_teacher
from n2n.recipes import Recipe
from n2n.teacher import train_classifier

USER_MODULE = textwrap.dedent("""
    from torch import nn

    def build_mlp(num_classes=10):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))
""")
IMPORT_ARCH = {"source": "import", "target": "pixelnets:build_mlp", "kwargs": {}}
NONE = {"mean": [0.0], "std": [1.0]}


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def pixel_teacher(digits, tmp_path_factory):
    """A user's MLP trained on digits as pixels in [0, 1] (torchvision's ToTensor convention), importable as
    ``pixelnets:build_mlp``; its weights as a plain state dict in ``weights.pt``."""
    where = tmp_path_factory.mktemp("user")
    (where / "pixelnets.py").write_text(USER_MODULE)
    sys.path.insert(0, str(where))
    from pixelnets import build_mlp

    torch.manual_seed(0)
    model = train_classifier(build_mlp(), digits.normalized(Normalization.identity(1)), Recipe(epochs=15, lr=3e-3))
    torch.save(model.state_dict(), where / "weights.pt")
    yield model, where
    sys.path.remove(str(where))
    sys.modules.pop("pixelnets", None)


def test_parse_normalize_names_and_values():
    assert [parse_normalize(n) for n in ("auto", "data", "none", "imagenet")] == ["auto", "data", "none", "imagenet"]
    assert parse_normalize("0.5,0.25") == Normalization((0.5,), (0.25,))
    assert parse_normalize("0.485/0.456/0.406,0.229/0.224/0.225") == Normalization(IMAGENET_MEAN, IMAGENET_STD)
    assert parse_normalize("0.485/0.456/0.406,0.229/0.224/0.225").describe() == "imagenet"
    assert Normalization.identity(3).describe() == "none"
    assert Normalization((0.5,), (0.25,)).describe() == "mean 0.5 std 0.25"


@pytest.mark.parametrize(
    "text, message",
    [
        ("ImageNet", "--normalize must be auto, data, none, imagenet or MEAN,STD"),
        ("", "--normalize must be auto"),
        ("0.5,", "--normalize must be auto"),
        ("0.1/0.2,0.3", "2 mean(s) but 1 std(s)"),
        ("0.5,0", "std must be positive"),
        ("0,inf", "must be finite numbers"),
    ],
)
def test_parse_normalize_refuses_bad_values(text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_normalize(text)


def test_fixed_normalizations_check_the_channels(digits):
    assert fixed_normalization("none", 3) == Normalization.identity(3)
    assert fixed_normalization("data", 1, digits.stats) == digits.stats
    assert fixed_normalization("imagenet", 3) == Normalization(IMAGENET_MEAN, IMAGENET_STD)
    rgb = Normalization((0.4, 0.5, 0.6), (0.2, 0.2, 0.2))
    assert list(candidates(3, rgb)) == ["data", "none", "imagenet"] and candidates(3, rgb)["data"] == rgb
    assert list(candidates(1, digits.stats)) == ["data", "none"]
    with pytest.raises(ConfigError, match="3-channel .RGB. inputs but digits has 1 channel"):
        fixed_normalization("imagenet", 1, digits.stats, "digits")
    with pytest.raises(ConfigError, match="gives 2 channel value.s. but digits has 1"):
        fixed_normalization(Normalization((0.1, 0.2), (1.0, 1.0)), 1, digits.stats, "digits")


def test_a_bundle_normalised_again_holds_the_same_pixels(digits):
    assert digits.normalization == digits.stats  # load_data: the training split's statistics, as before
    assert digits.normalized(digits.stats) is digits  # nothing recomputed: the same bytes
    pixels = digits.normalized(Normalization.identity(1))
    assert pixels.mean == (0.0,) and pixels.std == (1.0,) and pixels.stats == digits.stats
    assert pixels.test.x.min() >= -1e-6 and pixels.test.x.max() <= 1 + 1e-6  # digits: 0..16 / 16
    assert pixels.test.x.max() == pytest.approx(1.0, abs=1e-6)
    back = pixels.normalized(digits.stats)
    assert torch.allclose(back.train.x, digits.train.x, atol=1e-5)
    assert torch.equal(back.train.y, digits.train.y)


def test_auto_picks_none_for_a_teacher_trained_on_pixels(pixel_teacher, digits):
    model, _ = pixel_teacher
    spec = ModelSpec(IMPORT_ARCH, (1, 8, 8), 10)  # records no normalization, as a user's model
    picked = choose_normalization("auto", model, spec, digits)
    assert picked.how == "measured" and picked.name == "none"
    assert picked.normalization == Normalization.identity(1)
    assert set(picked.val_accuracy) == {"data", "none"}  # imagenet only for 3 channels
    assert picked.val_accuracy["none"] > 0.85
    assert picked.val_accuracy["data"] < picked.val_accuracy["none"] - 0.05  # the split's statistics hurt it
    recorded = ModelSpec(IMPORT_ARCH, (1, 8, 8), 10, normalization=NONE)
    assert choose_normalization("auto", model, recorded, digits).how == "recorded"
    forced = choose_normalization("data", model, recorded, digits)
    assert forced.normalization == digits.stats and forced.overrides


def test_match_teacher_records_the_data_or_applies_the_record(digits):
    spec = ModelSpec(IMPORT_ARCH, (1, 8, 8), 10)
    recorded, same = match_teacher(spec, digits)
    assert same is digits and recorded.normalization == digits.stats.to_spec()
    _, pixels = match_teacher(ModelSpec(IMPORT_ARCH, (1, 8, 8), 10, normalization=NONE), digits)
    assert pixels.normalization == Normalization.identity(1)


def test_evaluate_measures_an_unrecorded_model_and_applies_a_recorded_one(pixel_teacher, tmp_path, capsys):
    model, _ = pixel_teacher
    save_model(model, ModelSpec(IMPORT_ARCH, (1, 8, 8), 10), tmp_path / "unrecorded")
    measured = evaluate_cmd(str(tmp_path / "unrecorded"), "digits", None, latency=False, trust_code=True)
    err = capsys.readouterr().err
    assert "normalization: none, the best validation accuracy" in err and "data " in err
    assert measured["normalization"] == NONE and measured["test_accuracy"] > 0.85

    save_model(model, ModelSpec(IMPORT_ARCH, (1, 8, 8), 10, normalization=NONE), tmp_path / "recorded")
    recorded = evaluate_cmd(str(tmp_path / "recorded"), "digits", None, latency=False, trust_code=True)
    assert "normalization:" not in capsys.readouterr().err  # what it records is used, nothing measured
    assert recorded["test_accuracy"] == measured["test_accuracy"]
    forced = evaluate_cmd(str(tmp_path / "recorded"), "digits", None, latency=False, trust_code=True, normalize="data")
    assert "warning: --normalize data replaces the normalization" in capsys.readouterr().err
    assert forced["test_accuracy"] < recorded["test_accuracy"] - 0.05


def test_train_teacher_records_an_explicit_normalization(tmp_path):
    out = tmp_path / "teacher"
    argv = ["train-teacher", "--arch", "lenet5", "--width", "0.25", "--epochs", "1", "--normalize", "0.5,0.25"]
    assert main([*argv, "--out", str(out)]) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert evaluate_cmd(str(out), "digits", None, latency=False)["normalization"] == spec["normalization"]


@pytest.mark.parametrize("data", ["digits", None])
def test_export_with_baked_normalization_takes_pixels(pixel_teacher, tmp_path, data):
    import onnxruntime

    model, _ = pixel_teacher
    recorded = {"mean": [0.25], "std": [0.5]}
    model_dir = save_model(model, ModelSpec(IMPORT_ARCH, (1, 8, 8), 10, normalization=recorded), tmp_path / "m")
    result = export_cmd(str(model_dir), "onnx", data=data, trust_code=True, bake=True)
    assert result["baked_normalization"] == recorded and result["inputs"] == (data or "random")
    session = onnxruntime.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    pixels = load_data("digits").normalized(Normalization.identity(1)).test.x[:32]
    got = torch.from_numpy(session.run(None, {"input": pixels.numpy()})[0])
    with torch.no_grad():
        expected = model((pixels - 0.25) / 0.5)
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, model(pixels).detach(), atol=1e-2)  # the file normalises: not the plain model


def test_a_teacher_at_chance_under_every_candidate_says_what_was_tried(tmp_path, capsys):
    from n2n.models import create_model

    kwargs = {"in_channels": 1, "num_classes": 10, "input_size": [8, 8], "width": 0.25}
    torch.manual_seed(0)
    save_model(
        create_model("lenet5", **kwargs),
        ModelSpec({"source": "zoo", "name": "lenet5", "kwargs": kwargs}, (1, 8, 8), 10),
        tmp_path / "t",
    )
    assert main(["compress", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("normalization: ") and "near chance" in lines[1]
    assert "see --normalize" in lines[1]


def test_compress_a_pixel_teacher_records_none_for_teacher_and_student(pixel_teacher, tmp_path, capsys):
    _, where = pixel_teacher
    run = tmp_path / "run"
    code = main(
        [
            "compress",
            "--teacher",
            "pixelnets:build_mlp",
            "--weights",
            str(where / "weights.pt"),
            "--data",
            "digits",
            "--out",
            str(run),
            "--workers",
            "1",
            "--stages",
            "shrink",
            "--updates",
            "1",
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
    assert "normalization: none, the best validation accuracy of the teacher" in capsys.readouterr().err
    for who in ("teacher", "student"):
        assert json.loads((run / who / "spec.json").read_text())["normalization"] == NONE
    report = json.loads((run / "report.json").read_text())
    assert report["teacher"]["val_accuracy"] > 0.85
    assert main(["report", str(run), "--trust-code"]) == 0  # rebuilt with the recorded normalization: same figures
    assert (
        json.loads((run / "report.json").read_text())["teacher"]["test_accuracy"] == report["teacher"]["test_accuracy"]
    )
