"""Every data set reader on tiny files written in its real format, and its errors for a wrong layout."""

import io
import os
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from n2n.data import dataset_options, list_datasets, load_data
from n2n.data.cifar import load_array_pickle
from n2n.data.images import decode_image, split_per_class
from n2n.errors import ConfigError, DataError


def raw_pixels(bundle, split):
    """Undo the normalisation: values in [0, 1] as read from disk."""
    mean = torch.tensor(bundle.mean)[None, :, None, None]
    std = torch.tensor(bundle.std)[None, :, None, None]
    return split.x * std + mean


# ---------------------------------------------------------------- CIFAR
class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 strings (SHORT_BINSTRING/BINSTRING), as the real CIFAR batches (cPickle) do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle naming numpy's array constructor as numpy 1.x (and the real files) do."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_images(labels):
    """(N, 3072) uint8 rows: red = 10 * label + i, green = 100 + row, blue = 200 + i (i = image index)."""
    n = len(labels)
    x = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    x[:, 0] = (10 * np.asarray(labels) + np.arange(n))[:, None, None]
    x[:, 1] = (100 + np.arange(32))[None, :, None]
    x[:, 2] = (200 + np.arange(n))[:, None, None]
    x[:, 2, 0, 0] = 0  # one pixel apart, to check the row-major (channel, row, column) layout
    return x.reshape(n, 3072)


def write_cifar10(folder, per_batch=4, n_test=6):
    folder.mkdir(parents=True)
    for i in range(1, 6):
        labels = [(j + i) % 10 for j in range(per_batch)]
        batch = {
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": labels,
            b"data": cifar_images(labels),
            b"filenames": [b"img_%d.png" % j for j in range(per_batch)],
        }
        (folder / f"data_batch_{i}").write_bytes(py2_pickle(batch))
    test_labels = list(range(n_test))
    test = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": test_labels,
        b"data": cifar_images(test_labels),
        b"filenames": [b"t_%d.png" % j for j in range(n_test)],
    }
    (folder / "test_batch").write_bytes(py2_pickle(test))
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"airplane", b"automobile"], b"num_vis": 3072}))
    return folder


def write_cifar100(folder, n_train=30, n_test=5):
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [(7 * j) % 100 for j in range(n)]
        batch = {
            b"filenames": [b"f"] * n,
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": cifar_images(fine),
        }
        (folder / name).write_bytes(py2_pickle(batch))
    (folder / "meta").write_bytes(py2_pickle({b"fine_label_names": [b"apple"], b"coarse_label_names": [b"fish"]}))
    return folder


def test_cifar10_reads_python_batches(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py")
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):  # the parent folder or the extracted folder
        b = load_data("cifar10", data_dir, val_fraction=0.2)
        assert (len(b.train) + len(b.val), len(b.test)) == (20, 6)
        assert b.input_shape == (3, 32, 32) and b.num_classes == 10 and b.augment == "crop_flip"
        assert b.test.y.tolist() == list(range(6))
        pixels = raw_pixels(b, b.test) * 255
        assert torch.allclose(pixels[3, :, 5, 7], torch.tensor([33.0, 105.0, 203.0]), atol=1e-3)
        assert pixels[3, 2, 0, 0].item() == pytest.approx(0.0, abs=1e-3)
        assert torch.allclose(b.train.x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    write_cifar100(tmp_path / "cifar-100-python")
    fine = load_data("cifar100", tmp_path, val_fraction=0.2)
    coarse = load_data("cifar100-coarse", tmp_path / "cifar-100-python", val_fraction=0.2)
    assert fine.num_classes == 100 and coarse.num_classes == 20
    assert fine.test.y.tolist() == [0, 7, 14, 21, 28]
    assert coarse.test.y.tolist() == [0, 1, 2, 4, 5]
    assert len(fine.train) + len(fine.val) == 30 and fine.input_shape == (3, 32, 32)


def test_cifar_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"data_batch_1\.\.5 and test_batch in DIR .*CIFAR-10 python version"):
        load_data("cifar10", tmp_path)
    with pytest.raises(DataError, match="needs --data-dir"):
        load_data("cifar10")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="still packed"):
        load_data("cifar10", tmp_path)
    d = write_cifar10(tmp_path / "c10")
    (d / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3"):
        load_data("cifar10", d)
    (d / "data_batch_3").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="data_batch_3 is not a CIFAR python batch"):
        load_data("cifar10", d)
    (d / "data_batch_3").write_bytes(py2_pickle({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        load_data("cifar10", d)
    (d / "data_batch_3").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(DataError, match="expected a dict with b'data' and b'labels'"):
        load_data("cifar10", d)
    with pytest.raises(DataError, match="lacks train, test"):
        load_data("cifar100", tmp_path / "c10")


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _OpensFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("payload", ["os.system", "open"])
def test_malicious_cifar_batch_is_refused_and_runs_nothing(tmp_path, payload):
    d = write_cifar10(tmp_path / "c10")
    pwned = tmp_path / "pwned"
    evil = _RunsCommand(f"touch {pwned}") if payload == "os.system" else _OpensFile(pwned)
    batch = {b"data": cifar_images([0, 1]), b"labels": [0, 1], b"x": evil}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        (d / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=protocol))
        with pytest.raises(DataError, match="is not allowed"):
            load_data("cifar10", d)
        with pytest.raises(DataError, match="is not allowed"):
            load_array_pickle(d / "data_batch_2")
    assert not pwned.exists()


# ---------------------------------------------------------------- SVHN
def write_svhn(folder, n_train=20, n_test=10):
    folder.mkdir(parents=True)
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)  # (H, W, C, N) as in the real files
        x[:, :, 0, :] = np.arange(n, dtype=np.uint8)
        x[:, :, 1, :] = 50
        x[4, 9, 2, :] = 250
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, 10 = digit 0
        scipy.io.savemat(folder / name, {"X": x, "y": y})
    return folder


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    d = write_svhn(tmp_path / "svhn")
    b = load_data("svhn", d, val_fraction=0.2)
    assert (len(b.train) + len(b.val), len(b.test)) == (20, 10)
    assert b.input_shape == (3, 32, 32) and b.num_classes == 10 and b.augment == "crop"
    assert b.test.y.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    pixels = raw_pixels(b, b.test) * 255
    assert torch.allclose(pixels[6, :, 4, 9], torch.tensor([6.0, 50.0, 250.0]), atol=1e-3)
    assert torch.allclose(pixels[6, :, 9, 4], torch.tensor([6.0, 50.0, 0.0]), atol=1e-3)


def test_svhn_errors(tmp_path):
    with pytest.raises(DataError, match="lacks train_32x32.mat, test_32x32.mat; expected"):
        load_data("svhn", tmp_path)
    d = write_svhn(tmp_path / "s")
    (d / "test_32x32.mat").write_bytes(b"not a matlab file at all" * 10)
    with pytest.raises(DataError, match="cannot read .*test_32x32.mat as a MATLAB v5 file"):
        load_data("svhn", d)
    scipy.io.savemat(d / "test_32x32.mat", {"images": np.zeros(3)})
    with pytest.raises(DataError, match="lacks the variables X and y"):
        load_data("svhn", d)
    scipy.io.savemat(d / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    with pytest.raises(DataError, match=r"labels must be 1\.\.10"):
        load_data("svhn", d)


# ---------------------------------------------------------------- image folders
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def write_image(path, colour, size=(40, 24), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    image = image.convert(mode) if mode != "RGB" else image
    image.save(path)


def write_class_folders(root, names, per_class=5):
    """PNG, JPEG and grayscale/palette images of one solid colour per class."""
    for i, name in enumerate(names):
        for j in range(per_class):
            suffix, mode = [(".png", "RGB"), (".jpg", "RGB"), (".png", "P"), (".JPEG", "RGB"), (".png", "RGBA")][j % 5]
            write_image(root / name / f"img{j}{suffix}", COLOURS[i % 3], mode=mode)
    return root


def test_decode_image_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    pixels = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10  # 2 rows x 4 columns, RGB
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png", 2)  # shorter side already 2: the central 2 columns, no resampling
    assert out.shape == (3, 2, 2) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, pixels[:, 1:3].transpose(2, 0, 1))
    Image.fromarray(np.full((30, 10), 77, np.uint8), mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "g.png", 8), np.full((3, 8, 8), 77))


def test_split_per_class_is_a_fixed_count_per_class():
    train, test = split_per_class([5, 3, 4], 2)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(12))
    assert [int(((test >= a) & (test < b)).sum()) for a, b in ((0, 5), (5, 8), (8, 12))] == [2, 2, 2]
    again_train, again_test = split_per_class([5, 3, 4], 2)
    assert np.array_equal(test, again_test) and np.array_equal(train, again_train)


def test_imagefolder_split_by_count_per_class(tmp_path):
    d = write_class_folders(tmp_path / "photos", ["cat", "dog", "fox"])
    (d / "cat" / "notes.txt").write_text("not an image")
    options = {"image_size": 12, "test_per_class": 2}
    b = load_data("imagefolder", d, val_fraction=0.3, options=options)
    assert b.input_shape == (3, 12, 12) and b.num_classes == 3 and b.augment == "crop_flip"
    assert (len(b.train) + len(b.val), len(b.test)) == (9, 6)
    assert sorted(b.test.y.tolist()) == [0, 0, 1, 1, 2, 2]
    pixels = raw_pixels(b, b.test)
    for image, label in zip(
        pixels, b.test.y.tolist(), strict=True
    ):  # each class's solid colour survives decoding (JPEG: nearly)
        expected = torch.tensor(COLOURS[label], dtype=torch.float32) / 255
        assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=0.03)
    assert b.options == {**options, "augment": "crop_flip"}
    other = load_data("imagefolder", d, val_fraction=0.3, seed=4, options=options)
    assert torch.allclose(raw_pixels(other, other.test), pixels, atol=1e-5)  # the test split ignores the run's seed
    assert load_data("imagefolder", d, options={"image_size": 8, "test_per_class": 1}).input_shape == (3, 8, 8)


def test_imagefolder_with_train_and_test_folders(tmp_path):
    write_class_folders(tmp_path / "d" / "train", ["a", "b"], per_class=4)
    write_class_folders(tmp_path / "d" / "test", ["a", "b"], per_class=2)
    b = load_data("imagefolder", tmp_path / "d", val_fraction=0.25, options={"image_size": 8})
    assert (len(b.train) + len(b.val), len(b.test)) == (8, 4)
    assert b.test.y.tolist() == [0, 0, 1, 1] and b.num_classes == 2


def test_caltech256_layout(tmp_path):
    root = tmp_path / "256_ObjectCategories"
    write_class_folders(root, ["001.ak47", "002.american-flag", "003.backpack", "257.clutter"], per_class=4)
    (root / "003.backpack" / "RENAME2").write_text("a stray file as in the real archive")
    b = load_data("caltech256", tmp_path, val_fraction=0.2, options={"image_size": 16, "test_per_class": 1})
    assert b.num_classes == 3 and b.input_shape == (3, 16, 16) and b.augment == "crop_flip"  # clutter left out
    assert (len(b.train) + len(b.val), len(b.test)) == (9, 3)
    assert b.test.y.tolist() == [0, 1, 2]
    assert dataset_options("caltech256") == {"image_size": 64, "test_per_class": 25, "augment": "crop_flip"}


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="class folders 001.ak47 ... 256.toad in DIR or DIR/256_ObjectCategories"):
        load_data("caltech256", tmp_path)
    with pytest.raises(DataError, match="one sub-folder of images per class"):
        load_data("imagefolder", tmp_path / "nowhere")
    d = write_class_folders(tmp_path / "few", ["a", "b"], per_class=3)
    with pytest.raises(DataError, match=r"a \(3\), b \(3\) have no more images than --test-per-class 25"):
        load_data("imagefolder", d)
    (d / "c").mkdir()
    with pytest.raises(DataError, match="class folder.* c hold no image file"):
        load_data("imagefolder", d, options={"test_per_class": 1})
    (d / "c").rmdir()
    (d / "b" / "img0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot decode image .*img0.png"):
        load_data("imagefolder", d, options={"test_per_class": 1})
    with pytest.raises(ConfigError, match="--image-size must be an integer >= 8"):
        load_data("imagefolder", d, options={"image_size": 2})
    with pytest.raises(DataError, match="cifar10 does not take --image-size"):
        load_data("cifar10", d, options={"image_size": 32})
    with pytest.raises(DataError, match="--test-per-class must be int"):
        load_data("imagefolder", d, options={"test_per_class": "3"})
    with pytest.raises(DataError, match="--augment must be one of"):
        load_data("digits", options={"augment": "rotate"})


# ---------------------------------------------------------------- npz
def test_npz_single_file_with_held_out_test_split(tmp_path):
    y = np.arange(50) % 5
    x = np.zeros((50, 6, 6), dtype=np.uint8) + (y * 40)[:, None, None].astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    b = load_data("npz", tmp_path / "d.npz", val_fraction=0.25)
    assert (len(b.train) + len(b.val), len(b.test)) == (40, 10)
    assert b.input_shape == (1, 6, 6) and b.num_classes == 5 and b.augment == "none"
    assert sorted(b.test.y.tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # stratified
    assert torch.allclose(raw_pixels(b, b.test)[:, 0, 0, 0] * 255, (b.test.y * 40).float(), atol=1e-3)


def test_npz_test_arrays_channels_last_and_directory(tmp_path):
    x = np.random.default_rng(0).random((12, 5, 5, 3)).astype(np.float32)  # (N, H, W, C)
    y = np.arange(12) % 3
    np.savez(tmp_path / "one.npz", x=x, y=y.reshape(12, 1), x_test=x[:4], y_test=y[:4])
    b = load_data("npz", tmp_path / "one.npz", val_fraction=0.25, options={"augment": "crop_flip"})
    assert b.input_shape == (3, 5, 5) and len(b.test) == 4 and b.augment == "crop_flip"
    assert torch.allclose(raw_pixels(b, b.test), torch.from_numpy(x[:4].transpose(0, 3, 1, 2)), atol=1e-5)
    (tmp_path / "dir").mkdir()
    np.savez(tmp_path / "dir" / "train.npz", x=x.transpose(0, 3, 1, 2), y=y)
    np.savez(tmp_path / "dir" / "test.npz", x=x[:6].transpose(0, 3, 1, 2), y=y[:6])
    d = load_data("npz", tmp_path / "dir", val_fraction=0.25)
    assert d.input_shape == (3, 5, 5) and (len(d.train) + len(d.val), len(d.test)) == (12, 6)


def test_npz_rgba_images_are_four_channels_not_eight(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (20, 9, 7, 4), dtype=np.uint8)  # (N, H, W, RGBA)
    np.savez(tmp_path / "rgba.npz", x=x, y=np.arange(20) % 2)
    b = load_data("npz", tmp_path / "rgba.npz", val_fraction=0.25)
    assert b.input_shape == (4, 9, 7) and b.num_classes == 2
    originals = {img.tobytes() for img in x.transpose(0, 3, 1, 2)}  # each image as (C, H, W)
    for img in raw_pixels(b, b.test):
        assert (img * 255).round().to(torch.uint8).numpy().tobytes() in originals


def test_npz_errors_and_object_arrays_are_never_unpickled(tmp_path):
    with pytest.raises(DataError, match="lacks train.npz, test.npz; expected --data-dir FILE.npz"):
        load_data("npz", tmp_path)
    np.savez(tmp_path / "a.npz", images=np.zeros((4, 2, 2)), y=np.zeros(4, int))
    with pytest.raises(DataError, match="lacks x .*it has images, y"):
        load_data("npz", tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 2, 2)), y=np.array([0.5, 1, 0, 1]))
    with pytest.raises(DataError, match="integer class labels"):
        load_data("npz", tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"PK not really a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_data("npz", tmp_path / "c.npz")
    pwned = tmp_path / "pwned"
    evil = np.array([_OpensFile(pwned), _RunsCommand(f"touch {pwned}")], dtype=object)
    np.savez(tmp_path / "evil.npz", x=evil, y=np.array([0, 1]))
    with pytest.raises(DataError, match="cannot read .*evil.npz"):
        load_data("npz", tmp_path / "evil.npz")
    assert not pwned.exists()


def test_every_registered_data_set_is_covered():
    assert {"cifar10", "cifar100", "cifar100-coarse", "svhn", "imagefolder", "caltech256", "npz"} <= set(
        list_datasets()
    )
