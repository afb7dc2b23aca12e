"""What a teacher n2n trained records about its data: the validation split it held out."""

import logging
from dataclasses import replace

import pytest
import torch

from n2n.compress import compress
from n2n.data import load_data
from n2n.errors import ConfigError
from n2n.models import build_model
from n2n.settings import CompressConfig
from n2n.teacher import teacher_spec, trained_split_seed


@pytest.fixture(scope="module")
def digits_spec():
    return teacher_spec("lenet5", load_data("digits"))


@pytest.mark.parametrize(
    ("meta", "data", "expected"),
    [
        ({"data": "digits", "seed": 3, "split_seed": 7}, "digits", 7),
        ({"data": "digits", "seed": 3}, "digits", 3),  # saved before split_seed was recorded: split with its seed
        ({"data": "digits", "seed": 3}, "mnist", None),  # trained on other data: its split says nothing here
        ({"seed": 3}, "digits", None),  # not trained by n2n (a network of your own)
        ({"data": "digits", "split_seed": True}, "digits", None),
        ({"data": "digits", "split_seed": -1}, "digits", None),
    ],
)
def test_trained_split_seed(digits_spec, meta, data, expected):
    assert trained_split_seed(replace(digits_spec, meta=meta), data) == expected


def test_compress_warns_when_the_data_is_split_otherwise_than_for_the_teacher(digits_spec, tmp_path, caplog):
    spec = replace(digits_spec, meta={**digits_spec.meta, "seed": 0, "split_seed": 0})
    data = load_data("digits", seed=1)
    with caplog.at_level(logging.WARNING, logger="n2n.compress"), pytest.raises(ConfigError, match="--fix"):
        compress(build_model(spec), spec, data, CompressConfig(fix=("no_such_layer*",)), tmp_path / "run")
    assert "split with seed 1" in caplog.text and "load the data with seed=0" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="n2n.compress"), pytest.raises(ConfigError, match="--fix"):
        compress(build_model(spec), spec, load_data("digits"), CompressConfig(fix=("no_such_layer*",)), tmp_path / "r2")
    assert "split with seed" not in caplog.text


def test_evaluate_measures_validation_on_the_split_the_model_records(digits_spec, tmp_path):
    from n2n.cli import evaluate_cmd
    from n2n.models import save_model
    from n2n.recipes import Recipe
    from n2n.teacher import train_classifier
    from n2n.train.evaluate import accuracy

    spec = replace(digits_spec, meta={**digits_spec.meta, "split_seed": 4})
    recorded, other = load_data("digits", seed=4), load_data("digits", seed=0)
    torch.manual_seed(0)
    model = train_classifier(build_model(spec), recorded, Recipe(epochs=2)).eval()  # trained beside split 4's
    save_model(model, spec, tmp_path / "model")
    assert accuracy(model, recorded.val.x, recorded.val.y) != accuracy(model, other.val.x, other.val.y)
    measured = evaluate_cmd(str(tmp_path / "model"), "digits", None, latency=False)
    assert measured["val_accuracy"] == pytest.approx(accuracy(model, recorded.val.x, recorded.val.y))
    given = evaluate_cmd(str(tmp_path / "model"), "digits", None, seed=0, latency=False)
    assert given["val_accuracy"] == pytest.approx(accuracy(model, other.val.x, other.val.y))
