import json
import math

import numpy as np
import pytest
import torch
from conftest import write_tiny_mnist
from test_datasets import write_class_folders

from n2n.cli import main
from n2n.data import load_data
from n2n.errors import ConfigError
from n2n.models import create_model
from n2n.recipes import PAPER, Recipe, list_recipes, lr_factor, resolve_recipe
from n2n.teacher import train_classifier


def test_paper_recipes():
    assert list_recipes() == ["default", "paper"]
    mnist = Recipe(
        epochs=50, lr=0.01, batch_size=64, optimizer="sgd", schedule="step", milestones=(30,), weight_decay=5e-4
    )
    cifar = Recipe(
        epochs=150, lr=0.001, batch_size=128, optimizer="adam", schedule="step", milestones=(80, 120), weight_decay=5e-4
    )
    for data in ("mnist", "fashion-mnist", "kmnist"):
        assert resolve_recipe("paper", data) == mnist
    for data in ("cifar10", "cifar100", "svhn"):
        assert resolve_recipe("paper", data) == cifar
    caltech = resolve_recipe("paper", "caltech256")
    assert (caltech.epochs, caltech.lr, caltech.optimizer, caltech.milestones) == (50, 0.01, "sgd", ())
    assert set(PAPER) == {
        "mnist",
        "fashion-mnist",
        "kmnist",
        "cifar10",
        "cifar100",
        "cifar100-coarse",
        "svhn",
        "caltech256",
    }


def test_default_recipe_and_overrides():
    assert resolve_recipe("default", "digits") == Recipe(3, 1e-3, 128, "adam", "cosine", (), 0.1, 0.9, 0.0)
    r = resolve_recipe("paper", "cifar10", epochs=2, batch_size=16)
    assert (r.epochs, r.batch_size, r.lr, r.milestones) == (2, 16, 0.001, (80, 120))
    assert resolve_recipe(Recipe(epochs=9), "anything", lr=0.5) == Recipe(epochs=9, lr=0.5)


def test_recipe_errors():
    with pytest.raises(ConfigError, match="--recipe must be one of default, paper; got 'fast'"):
        resolve_recipe("fast", "mnist")
    with pytest.raises(ConfigError, match="--recipe paper has schedules for mnist.* not digits"):
        resolve_recipe("paper", "digits")
    with pytest.raises(ConfigError, match="--epochs and --batch-size must be positive"):
        resolve_recipe("paper", "mnist", epochs=0)
    with pytest.raises(ConfigError, match="--lr must be a positive"):
        resolve_recipe("default", "mnist", lr=-1.0)


def test_lr_factor_exact_values():
    mnist, cifar = PAPER["mnist"], PAPER["cifar10"]
    assert [lr_factor(mnist, s, 10) for s in (0, 299, 300, 499)] == [1.0, 1.0, 0.1, 0.1]
    assert [lr_factor(cifar, e * 4, 4) for e in (0, 79, 80, 119)] == [1.0, 1.0, 0.1, 0.1]
    assert lr_factor(cifar, 120 * 4, 4) == pytest.approx(0.01, abs=1e-15)
    assert lr_factor(PAPER["caltech256"], 10_000, 10) == 1.0  # no decay given by the paper
    cosine = Recipe(epochs=2)
    assert [lr_factor(cosine, s, 5) for s in (0, 5, 10)] == [1.0, 0.5 * (1 + math.cos(math.pi / 2)), 0.0]


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_train_classifier_augments_training_batches_only_and_is_seeded(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (60, 3, 8, 8), dtype=np.uint8), y=np.arange(60) % 3)
    runs = {}
    for name, policy in (("none", "none"), ("crop_flip", "crop_flip"), ("again", "crop_flip")):
        data = load_data("npz", tmp_path / "d.npz", options={"augment": policy})
        torch.manual_seed(0)
        model = create_model("lenet5", in_channels=3, num_classes=3, input_size=8, width=0.25)
        train_classifier(model, data, Recipe(epochs=2, batch_size=16), seed=0)
        runs[name] = _weights(model)
    assert torch.equal(runs["crop_flip"], runs["again"])
    assert not torch.equal(runs["crop_flip"], runs["none"])


def test_train_teacher_with_the_paper_recipe_on_tiny_mnist(tmp_path):
    data_dir = write_tiny_mnist(tmp_path / "mnist", n_train=100, n_test=20)
    out = tmp_path / "teacher"
    argv = [
        "train-teacher",
        "--arch",
        "lenet5",
        "--width",
        "0.25",
        "--data",
        "mnist",
        "--data-dir",
        str(data_dir),
        "--recipe",
        "paper",
        "--epochs",
        "1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    meta = json.loads((out / "spec.json").read_text())["meta"]
    assert meta["recipe"] == {
        "epochs": 1,
        "lr": 0.01,
        "batch_size": 64,
        "optimizer": "sgd",
        "schedule": "step",
        "milestones": [30],
        "gamma": 0.1,
        "momentum": 0.9,
        "weight_decay": 0.0005,
    }
    assert meta["epochs"] == 1 and 0.0 <= meta["test_accuracy"] <= 1.0


def test_image_options_reach_the_reader_from_the_command_line(tmp_path, capsys):
    data_dir = write_class_folders(tmp_path / "photos", ["a", "b"], per_class=4)
    out = tmp_path / "teacher"
    options = ["--data", "imagefolder", "--data-dir", str(data_dir), "--image-size", "12", "--test-per-class", "1"]
    assert (
        main(["train-teacher", "--arch", "lenet5", "--width", "0.25", "--epochs", "1", "--out", str(out), *options])
        == 0
    )
    spec = json.loads((out / "spec.json").read_text())
    assert spec["input_shape"] == [3, 12, 12]
    assert spec["meta"]["data_options"] == {"image_size": 12, "test_per_class": 1, "augment": "crop_flip"}
    assert main(["evaluate", str(out), *options]) == 0
    assert main(["evaluate", str(out), *options[:4], "--test-per-class", "1"]) == 2  # 64 px does not fit the teacher
    assert "takes inputs of shape (3, 12, 12)" in capsys.readouterr().err


def test_a_search_records_its_data_options_for_resume_and_report(tmp_path):
    data_dir = write_class_folders(tmp_path / "photos", ["a", "b"], per_class=4)
    options = ["--data", "imagefolder", "--data-dir", str(data_dir), "--image-size", "12", "--test-per-class", "1"]
    teacher, run = tmp_path / "teacher", tmp_path / "run"
    assert (
        main(["train-teacher", "--arch", "lenet5", "--width", "0.25", "--epochs", "1", "--out", str(teacher), *options])
        == 0
    )
    tiny = [
        "--workers",
        "1",
        "--stages",
        "remove",
        "--updates",
        "1",
        "--rollouts",
        "2",
        "--steps",
        "2",
        "--finetune-epochs",
        "0",
    ]
    assert main(["compress", "--teacher", str(teacher), "--out", str(run), *tiny, *options]) == 0
    source = json.loads((run / "run.json").read_text())
    assert source["data_options"] == {"image_size": 12, "test_per_class": 1, "augment": "crop_flip"}
    before = json.loads((run / "report.json").read_text())
    assert main(["report", str(run)]) == 0  # reads the data again from run.json: 12 px, not the default 64
    after = json.loads((run / "report.json").read_text())
    assert after["student"]["test_accuracy"] == before["student"]["test_accuracy"]
    assert after["teacher"]["params"] == before["teacher"]["params"]
