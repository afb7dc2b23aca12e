import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_mnist

from n2n.data import list_datasets, load_data, load_recorded, read_idx, write_idx
from n2n.errors import DataError

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int32])
def test_idx_round_trip(tmp_path, name, dtype):
    arr = (np.arange(2 * 3 * 4) % 7).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / name, arr)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "cut").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "x.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "x.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loader_on_tiny_files(tmp_path, gz):
    d = write_tiny_mnist(tmp_path, n_train=100, n_test=30, gz=gz)
    b = load_data("mnist", d, val_fraction=0.2, seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (80, 20, 30)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert b.train.x.dtype == torch.float32 and b.train.y.dtype == torch.int64
    assert set(b.val.y.tolist()) == set(range(10))  # stratified: every class held out
    assert abs(b.train.x.mean().item()) < 1e-4 and abs(b.train.x.std().item() - 1) < 1e-2
    again = load_data("mnist", d, val_fraction=0.2, seed=0)
    other = load_data("mnist", d, val_fraction=0.2, seed=1)
    assert torch.equal(again.val.x, b.val.x)
    assert not torch.equal(other.val.x, b.val.x)
    small = load_data("mnist", d, val_fraction=0.2, max_train=30)
    assert len(small.train) == 30 and len(small.val) == 20


def test_mnist_errors(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_data("mnist")
    with pytest.raises(DataError, match="not a directory"):
        load_data("mnist", tmp_path / "nowhere")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_data("mnist", tmp_path)
    with pytest.raises(DataError, match="known: .*digits"):
        load_data("imagenet")
    d = write_tiny_mnist(tmp_path / "m", n_train=40, n_test=10)
    write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(39, dtype=np.uint8))
    with pytest.raises(DataError, match="40 images but 39 labels"):
        load_data("mnist", d)
    d2 = write_tiny_mnist(tmp_path / "m2", n_train=40, n_test=10)
    labels = np.arange(10, dtype=np.int32) % 10
    labels[0] = -1
    write_idx(d2 / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match="labels must be in"):
        load_data("mnist", d2)


def test_digits_embedded_with_fixed_test_split():
    a, b = load_data("digits", seed=0), load_data("digits", seed=5)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert torch.equal(a.test.y, b.test.y)
    assert {"digits", "mnist", "fashion-mnist", "kmnist"} <= set(list_datasets())


@pytest.mark.skipif(not MNIST.is_dir(), reason="real MNIST not beside the repository")
def test_real_mnist():
    b = load_data("mnist", MNIST)
    assert (len(b.train) + len(b.val), len(b.test)) == (60000, 10000)
    assert b.input_shape == (1, 28, 28)
    assert gzip.decompress((MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())[:4] == b"\x00\x00\x08\x01"


def test_a_run_is_loaded_again_with_the_split_it_recorded():
    source = {"data": "digits", "data_dir": None, "max_train": None, "data_options": None, "split_seed": 5}
    again, expected = load_recorded(source, seed=0), load_data("digits", seed=5)
    assert again.split_seed == 5
    assert torch.equal(again.val.y, expected.val.y) and torch.equal(again.val.x, expected.val.x)
    older = load_recorded({k: v for k, v in source.items() if k != "split_seed"}, seed=3)  # before split_seed
    assert older.split_seed == 3
