"""Fuzz every file n2n reads: a mutated file gives a correct result or one of n2n's own errors, never another
exception (which would reach the user as a traceback) and never an unbounded allocation (bounds are checked before
anything is built)."""

import gzip
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from n2n.errors import N2NError
from n2n.models.io import ModelSpec, load_model, save_model
from n2n.models.zoo import create_model

FUZZ = settings(
    max_examples=int(__import__("os").environ.get("N2N_FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated_json(draw, original):
    """``original`` with one value replaced, one key deleted or added, or the whole text cut or bit-flipped."""
    kind = draw(st.sampled_from(["replace", "delete", "add", "truncate", "flip"]))
    text = json.dumps(original)
    if kind == "truncate":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    if kind == "flip":
        i = draw(st.integers(0, len(text) - 1))
        return text[:i] + chr(draw(st.integers(32, 126))) + text[i + 1 :]
    data = json.loads(text)
    path = draw(st.sampled_from(list(_paths(data))))
    if not path:
        return json.dumps(draw(JSON_VALUES))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if kind == "replace":
        parent[path[-1]] = draw(JSON_VALUES)
    elif kind == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    else:
        parent.append(draw(JSON_VALUES))
    return json.dumps(data, allow_nan=True)


@st.composite
def mutated_bytes(draw, original: bytes, region: int | None = None):
    """``original`` cut short, or with up to four bytes changed (within the first ``region`` bytes when given)."""
    if draw(st.booleans()):
        return original[: draw(st.integers(0, len(original) - 1))]
    data = bytearray(original)
    end = min(len(data), region or len(data)) - 1
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, end))] = draw(st.integers(0, 255))
    return bytes(data)


def _expect_n2n_error_or_result(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except N2NError:
        return None


# ------------------------------------------------------------------ saved models
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    kwargs = {"in_channels": 1, "num_classes": 10, "input_size": [8, 8], "width": 0.25}
    spec = ModelSpec(
        {"source": "zoo", "name": "lenet5", "kwargs": kwargs},
        (1, 8, 8),
        10,
        normalization={"mean": [0.5], "std": [0.25]},
    )
    torch.manual_seed(0)
    teacher = create_model("lenet5", **kwargs)
    from n2n.surgery import Edits, apply_edits

    edits = Edits.make(removed=["features.3"], keep={"classifier.0": 0.5})
    student = apply_edits(teacher, edits, torch.zeros(2, 1, 8, 8), ("classifier.4",))
    out = tmp_path_factory.mktemp("saved") / "student"
    save_model(student, ModelSpec(spec.arch, spec.input_shape, 10, edits, ("classifier.4",), spec.normalization), out)
    return out


@pytest.fixture(scope="module")
def spec_json(saved):
    return json.loads((saved / "spec.json").read_text())


@FUZZ
@given(data=st.data())
def test_mutated_spec_json(saved, spec_json, tmp_path_factory, data):
    target = tmp_path_factory.mktemp("m")
    shutil.copy(saved / "model.safetensors", target / "model.safetensors")
    (target / "spec.json").write_text(data.draw(mutated_json(spec_json)))
    loaded = _expect_n2n_error_or_result(load_model, target)
    if loaded is not None:
        model, spec = loaded
        assert model(torch.zeros(1, *spec.input_shape)).shape == (1, spec.num_classes)


@FUZZ
@given(data=st.data())
def test_mutated_model_weights(saved, tmp_path_factory, data):
    target = tmp_path_factory.mktemp("w")
    shutil.copy(saved / "spec.json", target / "spec.json")
    (target / "model.safetensors").write_bytes(data.draw(mutated_bytes((saved / "model.safetensors").read_bytes())))
    _expect_n2n_error_or_result(load_model, target)


# ------------------------------------------------------------------ run records and settings
RUN_JSON = {
    "teacher": "runs/t",
    "data": "digits",
    "data_dir": None,
    "max_train": None,
    "data_options": {"augment": "none"},
    "command": "n2n compress",
}


@FUZZ
@given(data=st.data())
def test_mutated_run_json(tmp_path_factory, data):
    from n2n.data import read_source

    path = tmp_path_factory.mktemp("r") / "run.json"
    path.write_text(data.draw(mutated_json(RUN_JSON)))
    source = _expect_n2n_error_or_result(read_source, path)
    if source is not None:
        assert isinstance(source["data"], str)


@FUZZ
@given(data=st.data())
def test_mutated_config_json(tmp_path_factory, data):
    from n2n.settings import CompressConfig
    from n2n.settings_file import read_config

    path = tmp_path_factory.mktemp("c") / "config.json"
    path.write_text(data.draw(mutated_json(json.loads(json.dumps(CompressConfig().to_dict())))))
    config = _expect_n2n_error_or_result(read_config, path)
    if config is not None:
        _expect_n2n_error_or_result(config.validate)


@FUZZ
@given(data=st.data())
def test_mutated_yaml_settings(tmp_path_factory, data):
    import yaml

    from n2n.cli.options import read_config_file

    path = tmp_path_factory.mktemp("y") / "settings.yaml"
    text = yaml.safe_dump({"updates": 3, "rollouts": 2, "lr": 0.001, "fractions": [0.5, 1.0], "fix": ["a*"]})
    path.write_bytes(data.draw(mutated_bytes(text.encode())))
    _expect_n2n_error_or_result(read_config_file, str(path))


# ------------------------------------------------------------------ policies and checkpoints
@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from n2n.search.policies import RemovalPolicy
    from n2n.search.policy_io import policy_record

    out = tmp_path_factory.mktemp("policy")
    torch.manual_seed(0)
    policy = RemovalPolicy()
    save_file(policy.state_dict(), str(out / "policy_remove.safetensors"))
    (out / "policy_remove.json").write_text(json.dumps(policy_record(policy.config())))
    return out


@FUZZ
@given(data=st.data())
def test_mutated_policy_files(policy_dir, tmp_path_factory, data):
    from n2n.search.policies import RemovalPolicy
    from n2n.search.stages import initial_policy as _initial_policy

    target = tmp_path_factory.mktemp("p")
    record = json.loads((policy_dir / "policy_remove.json").read_text())
    weights = (policy_dir / "policy_remove.safetensors").read_bytes()
    if data.draw(st.booleans()):
        (target / "policy_remove.json").write_text(data.draw(mutated_json(record)))
        (target / "policy_remove.safetensors").write_bytes(weights)
    else:
        (target / "policy_remove.json").write_text(json.dumps(record))
        (target / "policy_remove.safetensors").write_bytes(data.draw(mutated_bytes(weights, region=200)))
    policy = _expect_n2n_error_or_result(_initial_policy, target, "remove", RemovalPolicy())
    if policy is not None:
        assert policy.keep_probs(torch.zeros(3, record["feature_dim"])).shape == (3,)


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    from n2n.search.checkpoint import write_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.safetensors"
    meta = {
        "stage_index": 0,
        "stage": "remove",
        "update": 1,
        "baseline": {"value": 0.5},
        "stage_best": None,
        "stage_best_reward": -2.0,
        "best": None,
        "base": {"removed": [], "keep": []},
        "others": [],
        "stage_ranked": {},
        "cache": [],
        "events": 3,
        "elapsed": 1.5,
        "seconds": {},
        "optim_groups": [],
        "optim_scalars": {},
    }
    write_checkpoint(path, meta, {"rng.stage": torch.Generator().get_state(), "policy.w": torch.zeros(3)})
    return path


@FUZZ
@given(data=st.data())
def test_mutated_checkpoint(checkpoint_file, tmp_path_factory, data):
    from n2n.search.checkpoint import read_checkpoint

    path = tmp_path_factory.mktemp("k") / "checkpoint.safetensors"
    path.write_bytes(data.draw(mutated_bytes(checkpoint_file.read_bytes(), region=600)))
    ckpt = _expect_n2n_error_or_result(read_checkpoint, path)
    if ckpt is not None:
        assert isinstance(ckpt.meta["update"], int)


# ------------------------------------------------------------------ data headers
def _idx_dir(tmp_path, images: bytes):
    from conftest import write_tiny_mnist

    d = write_tiny_mnist(tmp_path / "mnist", n_train=40, n_test=20, size=8, gz=False)
    (d / "train-images-idx3-ubyte").write_bytes(images)
    return d


@FUZZ
@given(data=st.data())
def test_mutated_idx_header(tmp_path_factory, data):
    from conftest import write_tiny_mnist

    from n2n.data import load_data

    base = write_tiny_mnist(tmp_path_factory.mktemp("i") / "mnist", n_train=40, n_test=20, size=8, gz=False)
    path = base / "train-images-idx3-ubyte"
    path.write_bytes(data.draw(mutated_bytes(path.read_bytes(), region=16)))
    if data.draw(st.booleans()):  # the same damage inside a gzip stream
        path.rename(base / "train-images-idx3-ubyte.gz.tmp")
        raw = (base / "train-images-idx3-ubyte.gz.tmp").read_bytes()
        (base / "train-images-idx3-ubyte.gz.tmp").unlink()
        gz = gzip.compress(raw)
        (base / "train-images-idx3-ubyte.gz").write_bytes(
            data.draw(mutated_bytes(gz)) if data.draw(st.booleans()) else gz
        )
    _expect_n2n_error_or_result(load_data, "mnist", base)


@FUZZ
@given(data=st.data())
def test_mutated_npz_header(tmp_path_factory, data):
    from n2n.data import load_data

    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros((20, 8, 8), np.uint8), y=np.arange(20) % 2)
    path = tmp_path_factory.mktemp("n") / "data.npz"
    path.write_bytes(data.draw(mutated_bytes(buffer.getvalue(), region=400)))
    _expect_n2n_error_or_result(load_data, "npz", path)


def test_the_fuzzed_readers_accept_their_unmutated_files(saved, policy_dir, checkpoint_file, tmp_path):
    """The strategies start from files that load: a fuzz run that only ever saw errors would prove nothing."""
    from n2n.search.checkpoint import read_checkpoint
    from n2n.search.policies import RemovalPolicy
    from n2n.search.stages import initial_policy as _initial_policy

    model, spec = load_model(saved)
    assert spec.edits.removed == ("features.3",)
    assert _initial_policy(Path(policy_dir), "remove", RemovalPolicy()) is not None
    assert read_checkpoint(checkpoint_file).meta["update"] == 1
