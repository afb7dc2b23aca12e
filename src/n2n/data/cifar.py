"""CIFAR-10 and CIFAR-100 from the official "python version" archives, read with a restricted unpickler.

The batches are Python 2 pickles of dicts (``b"data"``: uint8 (N, 3072) rows of 1024 red, 1024 green, 1024 blue
values; ``b"labels"`` or ``b"fine_labels"``/``b"coarse_labels"``: lists of ints). Unpickling can run arbitrary
code, so :class:`ArrayUnpickler` resolves only the globals a numpy array needs and refuses every other one.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from n2n.data._base import RawData, register_dataset
from n2n.errors import DataError

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array-rebuilding function, whatever module it lives in
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 1.x (and the Python 2 files)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only numpy arrays and plain containers; any other global raises."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only numpy arrays are)") from None


def load_array_pickle(path: Path) -> Any:
    """Unpickle ``path`` (a Python 2 pickle: strings come back as bytes) allowing numpy arrays only."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    try:
        return ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any failure to parse untrusted bytes means the file is not a batch
        raise DataError(f"{path} is not a CIFAR python batch: {err}") from None


class _Layout(NamedTuple):
    folder: str  # the folder the archive extracts to
    archive: str
    train: tuple[str, ...]
    test: str
    label_key: bytes
    num_classes: int
    title: str


_LAYOUTS = {
    "cifar10": _Layout(
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        b"labels",
        10,
        "CIFAR-10 python version",
    ),
    "cifar100": _Layout(
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        "test",
        b"fine_labels",
        100,
        "CIFAR-100 python version",
    ),
    "cifar100-coarse": _Layout(
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("train",),
        "test",
        b"coarse_labels",
        20,
        "CIFAR-100 python version",
    ),
}


def _describe(layout: _Layout) -> str:
    files = "data_batch_1..5 and test_batch" if len(layout.train) > 1 else "train and test"
    return (
        f"{files} in DIR or in DIR/{layout.folder} (the '{layout.title}' archive {layout.archive}, extracted with "
        f"`tar xzf {layout.archive}`)"
    )


def _locate(name: str, layout: _Layout, data_dir: Path | None) -> Path:
    """The folder holding the batch files: ``data_dir`` itself or the archive's folder inside it."""
    if data_dir is None:
        raise DataError(f"{name} needs --data-dir DIR; expected {_describe(layout)}")
    if not data_dir.is_dir():
        raise DataError(f"{name}: --data-dir {data_dir} is not a directory; expected {_describe(layout)}")
    if (data_dir / layout.folder).is_dir():
        data_dir = data_dir / layout.folder
    missing = [f for f in (*layout.train, layout.test) if not (data_dir / f).is_file()]
    if missing and (data_dir / layout.archive).is_file():
        raise DataError(f"{name}: {data_dir / layout.archive} is still packed; expected {_describe(layout)}")
    if missing:
        raise DataError(f"{name}: {data_dir} lacks {', '.join(missing)}; expected {_describe(layout)}")
    return data_dir


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch file."""
    batch = load_array_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise DataError(f"{path} is not a CIFAR python batch: expected a dict with b'data' and {label_key!r}")
    x, y = batch[b"data"], np.asarray(batch[label_key])
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        shape = getattr(x, "shape", None)
        raise DataError(f"{path}: b'data' must be a uint8 array of shape (N, 3072); got {type(x).__name__} {shape}")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {label_key!r} must be a list of integer labels")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def read_cifar(name: str, data_dir: Path | None) -> RawData:
    """CIFAR data set ``name`` ('cifar10', 'cifar100' or 'cifar100-coarse') from its extracted python archive."""
    layout = _LAYOUTS[name]
    folder = _locate(name, layout, data_dir)
    train = [_read_batch(folder / f, layout.label_key) for f in layout.train]
    x_test, y_test = _read_batch(folder / layout.test, layout.label_key)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return RawData(x_train, y_train, x_test, y_test, layout.num_classes, 255.0)


for _name in _LAYOUTS:  # the paper trained its CIFAR teachers with random crops and horizontal flips
    register_dataset(_name, augment="crop_flip")(lambda data_dir, _n=_name: read_cifar(_n, data_dir))
